"""No private key, preshared key, token, password or TOTP seed ever shows in the repr,
str or to_dict() of anything wgm returns, nor in any error message. The secrets are
collected through the audited exports, then searched for everywhere else."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import pytest

import wgm
import wgm.keys
import wgm.wgquick
from wgm_testing import totp_code, totp_secret


def shown(obj: object) -> list[str]:
    """Every way an object is shown."""
    texts = [repr(obj), str(obj)]
    if isinstance(obj, (tuple, list)):
        for x in obj:
            texts += shown(x)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        texts += [str(d), json.dumps(d)]
    return texts


def forms(secret: str) -> list[str]:
    """A secret as text, and its base64 key bytes as hex (how UAPI spells keys)."""
    out = [secret]
    try:
        raw = base64.b64decode(secret, validate=True)
        if len(raw) == 32:
            out.append(raw.hex())
    except ValueError:
        pass
    return out


def test_no_secret_in_any_result_or_error(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server, key_file: Path
) -> None:
    results: list[object] = []
    secrets: list[str] = [key_file.read_text().strip()]

    def keep(x: Any) -> Any:
        results.append(x)
        return x

    # Everything with a secret behind it, exported through the audited calls.
    peers = keep(manager.add_peers(admin, office, "dev", count=3))
    alice = keep(manager.add_peer(admin, office, "alice"))
    for p in (*peers, alice):
        cfg = keep(manager.client_config(admin, office, p))
        parsed = keep(cfg.parse())
        secrets += [parsed.interface.private_key or "", parsed.peers[0].preshared_key or ""]
    exported = keep(manager.export_server(admin, office))
    secrets.append(keep(exported.parse()).interface.private_key or "")
    keep(manager.rotate_peer_key(admin, office, alice))
    keep(manager.rotate_peer_psk(admin, office, alice))
    cfg = keep(manager.client_config(admin, office, alice)).parse()
    secrets += [cfg.interface.private_key or "", cfg.peers[0].preshared_key or ""]
    keep(manager.rotate_server_key(admin, office))
    secrets.append(manager.export_server(admin, office).parse().interface.private_key or "")
    password = "a rather secret passphrase"
    secrets.append(password)
    keep(manager.create_user(admin, "bob", password=password))
    token = keep(manager.create_token(admin, "ci", user="bob"))
    secrets.append(token.secret)
    bob_login = keep(manager.login("bob", password))
    enrolment = keep(manager.enroll_totp(bob_login, "bob"))
    seed = totp_secret(enrolment.uri)
    secrets += [enrolment.uri, base64.b32encode(seed).decode().rstrip("=")]
    manager.confirm_totp(bob_login, "bob", totp_code(seed))
    pair = keep(wgm.keys.generate())
    psk = keep(wgm.keys.generate_preshared())
    secrets += [pair.private_key, psk.key]
    assert all(secrets) and len(set(secrets)) == len(secrets)

    # Everything else the API returns.
    bob = keep(manager.authenticate_token(token.secret))
    keep(manager.list_servers(admin))
    keep(manager.list_peers(admin, office))
    keep(manager.history(admin, office))
    keep(manager.diff(admin, office, 1))
    keep(manager.query_audit(admin))
    keep(manager.verify_audit(admin))
    keep(manager.list_users(admin))
    keep(manager.list_tokens(admin))
    keep(manager.list_roles(admin))
    keep(manager.plan(admin, office, backend="userspace"))
    keep(manager.apply(admin, office, backend="userspace", dry_run=True))
    keep(manager.status(admin, office, backend="userspace"))
    keep(manager.rollback(admin, office, 2))
    keep(manager.remove_peer(admin, office, peers[0]))
    keep(wgm.wgquick.parse(exported.text))

    # Errors, several of them given a secret as input.
    failing: list[Callable[[], object]] = [
        lambda: manager.authenticate_token(token.secret + "x"),
        lambda: manager.authenticate_token(token.secret[:-2]),
        lambda: manager.login("bob", password + "!"),
        lambda: manager.login("bob", password),  # the code is missing
        lambda: manager.login(
            "bob", password, totp=str((int(totp_code(seed)) + 1) % 10**6).zfill(6)
        ),
        lambda: manager.add_peer(admin, office, "k", public_key=pair.private_key + "x"),
        lambda: manager.create_token(bob, "x", user="root"),
        lambda: wgm.keys.public_key(pair.private_key[:-1] + "!"),
        lambda: wgm.wgquick.parse(exported.text.replace("PrivateKey = ", "PrivateKey = x")),
        lambda: wgm.wgquick.parse(exported.text + "\nPresharedKey = " + psk.key + "\n"),
        lambda: manager.set_password(admin, "bob", "short"),
        lambda: wgm.Manager.open(
            f"postgres://u:{password.replace(' ', '')}@127.0.0.1:1/db", master_key=psk.key
        ),
    ]
    for fail in failing:
        with pytest.raises(wgm.WgmError) as e:
            fail()
        results.append(e.value)
        results.append(e.value.args)
        results.append((e.value.field, e.value.reason, e.value.details))
    secrets.append(password.replace(" ", ""))

    texts = [t for r in results for t in shown(r)]
    for s in secrets:
        for form in forms(s):
            for t in texts:
                assert form not in t, f"a secret shows in {t[:200]!r}"
