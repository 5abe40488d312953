//! `wgm user …` and `wgm token …`.

use std::collections::HashMap;
use std::io::Read;

use serde_json::json;
use wgm_core::manager::{NewToken, NewUser, UserUpdate, UserView};
use wgm_core::model::{Page, RoleAssignment, UserId};
use wgm_core::rbac::{Permission, Scope};
use wgm_core::Error;
use zeroize::Zeroizing;

use crate::args::{TokenCmd, TokenCreate, UserAdd, UserCmd, UserRole};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::out::{self, Cell, Style};
use crate::parse::{self, Relative};

/// Largest password read from stdin, bytes (the library's own cap is lower; one more
/// byte lets it refuse an over-long password with its own message).
const MAX_STDIN_PASSWORD: u64 = 64 * 1024;

/// Run a `user` subcommand.
pub async fn user(ctx: &Ctx, cmd: UserCmd) -> CliResult {
    match cmd {
        UserCmd::Add(a) => add(ctx, a).await,
        UserCmd::List => {
            let users = ctx.m.list_users(&ctx.p, Page::ALL).await?;
            list(ctx, &users)
        }
        UserCmd::Show(a) => {
            let id = ctx.m.resolve_user(&ctx.p, &a.user).await?;
            let v = ctx.m.get_user(&ctx.p, id).await?;
            show(ctx, &v)
        }
        UserCmd::Disable(a) => set_active(ctx, &a.user, false).await,
        UserCmd::Enable(a) => set_active(ctx, &a.user, true).await,
        UserCmd::Role(a) => role(ctx, a).await,
        UserCmd::Passwd(a) => {
            let id = ctx.m.resolve_user(&ctx.p, &a.user).await?;
            let own = !ctx.p.is_local() && ctx.p.user_id() == id.0;
            let text = read_stdin_secret()?;
            let mut lines = text.lines();
            let (current, new) = if own {
                (lines.next(), lines.next())
            } else {
                (None, lines.next())
            };
            let new = new.ok_or_else(|| {
                Error::invalid(
                    "password",
                    if own {
                        "give the current and the new password on two lines of stdin"
                    } else {
                        "give the new password on stdin"
                    },
                )
            })?;
            ctx.m.set_password(&ctx.p, id, current, new).await?;
            if ctx.out.json {
                return ctx.out.json(&json!({ "password_set": id }));
            }
            ctx.out
                .line("password changed; the user's sessions were ended")
        }
        UserCmd::Delete(a) => {
            let id = ctx.m.resolve_user(&ctx.p, &a.user).await?;
            let v = ctx.m.get_user(&ctx.p, id).await?;
            ctx.m.delete_user(&ctx.p, id).await?;
            if ctx.out.json {
                return ctx
                    .out
                    .json(&json!({ "deleted": { "id": v.id, "name": v.name } }));
            }
            ctx.out
                .line(&format!("deleted user {} and their tokens", v.name))
        }
    }
}

/// Read all of stdin (a password), refusing more than [`MAX_STDIN_PASSWORD`] bytes.
fn read_stdin_secret() -> CliResult<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_PASSWORD + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::invalid("password", format!("cannot read stdin: {e}")))?;
    if buf.len() as u64 > MAX_STDIN_PASSWORD {
        return Err(Error::invalid("password", "too long").into());
    }
    let text =
        std::str::from_utf8(&buf).map_err(|_| Error::invalid("password", "must be UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// One password from stdin: the first line, without its line ending.
fn password_from_stdin() -> CliResult<Zeroizing<String>> {
    let text = read_stdin_secret()?;
    let first = text.split('\n').next().unwrap_or("");
    let first = first.strip_suffix('\r').unwrap_or(first);
    Ok(Zeroizing::new(first.to_owned()))
}

async fn scope(ctx: &Ctx, server: Option<&str>) -> CliResult<Scope> {
    Ok(match server {
        Some(s) => Scope::Server(ctx.server(s).await?.0),
        None => Scope::Global,
    })
}

async fn add(ctx: &Ctx, a: UserAdd) -> CliResult {
    let (name, role) = (a.name, a.role);
    let mut spec = NewUser::new(name, role.clone());
    spec.roles = vec![RoleAssignment {
        role,
        scope: scope(ctx, a.server.as_deref()).await?,
    }];
    spec.email = a.email;
    if a.password_stdin {
        spec.password = Some(password_from_stdin()?);
    }
    let v = ctx.m.create_user(&ctx.p, spec).await?;
    show(ctx, &v)
}

async fn set_active(ctx: &Ctx, user: &str, active: bool) -> CliResult {
    let id = ctx.m.resolve_user(&ctx.p, user).await?;
    let v = ctx
        .m
        .update_user(
            &ctx.p,
            id,
            UserUpdate {
                active: Some(active),
                ..UserUpdate::default()
            },
        )
        .await?;
    if ctx.out.json {
        return ctx.out.json(&v);
    }
    ctx.out.line(&format!(
        "{} user {}",
        if active { "enabled" } else { "disabled" },
        v.name
    ))
}

async fn role(ctx: &Ctx, a: UserRole) -> CliResult {
    let id = ctx.m.resolve_user(&ctx.p, &a.user).await?;
    let role = a.role;
    let assignment = RoleAssignment {
        role,
        scope: scope(ctx, a.server.as_deref()).await?,
    };
    let v = ctx
        .m
        .update_user(
            &ctx.p,
            id,
            UserUpdate {
                roles: Some(vec![assignment]),
                ..UserUpdate::default()
            },
        )
        .await?;
    show(ctx, &v)
}

fn roles_text(roles: &[RoleAssignment]) -> String {
    if roles.is_empty() {
        return "-".to_owned();
    }
    roles
        .iter()
        .map(|r| match r.scope {
            Scope::Global => r.role.to_string(),
            Scope::Server(id) => format!("{}@server:{id}", r.role),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(ctx: &Ctx, users: &[UserView]) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(users);
    }
    let rows: Vec<Vec<Cell>> = users
        .iter()
        .map(|u| {
            vec![
                Cell::plain(u.name.as_str()),
                Cell::plain(roles_text(&u.roles)),
                if u.active {
                    Cell::styled("active", Style::Green)
                } else {
                    Cell::styled("disabled", Style::Red)
                },
                Cell::plain(if u.has_password { "yes" } else { "no" }),
                Cell::plain(if u.totp { "yes" } else { "no" }),
                Cell::plain(out::opt(u.email.as_deref())),
                Cell::plain(out::time(u.created_at)),
            ]
        })
        .collect();
    ctx.out.table(
        &[
            "NAME", "ROLES", "STATE", "PASSWORD", "TOTP", "EMAIL", "CREATED",
        ],
        &rows,
        "no users (the local administrator needs none; add one: wgm user add NAME --role operator)",
    )
}

fn show(ctx: &Ctx, u: &UserView) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(u);
    }
    ctx.out.kv(&[
        ("name", u.name.to_string()),
        ("id", u.id.to_string()),
        ("roles", roles_text(&u.roles)),
        (
            "state",
            if u.active { "active" } else { "disabled" }.to_owned(),
        ),
        (
            "password",
            if u.has_password { "set" } else { "none" }.to_owned(),
        ),
        ("totp", if u.totp { "enrolled" } else { "no" }.to_owned()),
        ("email", out::opt(u.email.as_deref())),
        ("peer quota", out::opt(u.peer_quota)),
        (
            "last login",
            u.last_login.map_or_else(|| "-".to_owned(), out::time),
        ),
        ("created", out::time(u.created_at)),
    ])
}

/// Run a `token` subcommand.
pub async fn token(ctx: &Ctx, cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::Create(a) => create_token(ctx, a).await,
        TokenCmd::List(a) => {
            let user = match &a.user {
                Some(u) => Some(ctx.m.resolve_user(&ctx.p, u).await?),
                None => None,
            };
            let tokens = ctx.m.list_tokens(&ctx.p, user).await?;
            if ctx.out.json {
                return ctx.out.json(&tokens);
            }
            let names: HashMap<UserId, String> = ctx
                .m
                .list_users(&ctx.p, Page::ALL)
                .await?
                .into_iter()
                .map(|u| (u.id, u.name.to_string()))
                .collect();
            let now = ctx.m.now();
            let rows: Vec<Vec<Cell>> = tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked {
                        Cell::styled("revoked", Style::Red)
                    } else if t.expires_at.is_some_and(|e| e <= now) {
                        Cell::styled("expired", Style::Yellow)
                    } else {
                        Cell::styled("active", Style::Green)
                    };
                    vec![
                        Cell::plain(t.id.to_string()),
                        Cell::plain(
                            names
                                .get(&t.user_id)
                                .cloned()
                                .unwrap_or_else(|| t.user_id.to_string()),
                        ),
                        Cell::plain(t.name.as_str()),
                        Cell::plain(match &t.scopes {
                            Some(s) => out::list(s),
                            None => "all of the user's".to_owned(),
                        }),
                        Cell::plain(t.expires_at.map_or_else(|| "never".to_owned(), out::time)),
                        state,
                    ]
                })
                .collect();
            ctx.out.table(
                &["ID", "USER", "NAME", "SCOPE", "EXPIRES", "STATE"],
                &rows,
                "no tokens",
            )
        }
        TokenCmd::Revoke(a) => {
            let id = a.id;
            ctx.m.revoke_token(&ctx.p, id).await?;
            if ctx.out.json {
                return ctx.out.json(&json!({ "revoked": id }));
            }
            ctx.out.line(&format!("revoked token {id}"))
        }
    }
}

/// A permission in its text form; `@server:NAME` may name the server instead of giving
/// its id.
async fn permission(ctx: &Ctx, text: &str) -> CliResult<Permission> {
    let text = match text.split_once("@server:") {
        Some((body, server)) if server.parse::<wgm_core::model::ServerId>().is_err() => {
            let id = ctx.server(server).await?;
            format!("{body}@server:{id}")
        }
        _ => text.to_owned(),
    };
    Ok(text
        .parse::<Permission>()
        .map_err(|e| e.in_field("token.scopes"))?)
}

async fn create_token(ctx: &Ctx, a: TokenCreate) -> CliResult {
    let user = ctx.m.resolve_user(&ctx.p, &a.user).await?;
    let scopes = match &a.scope {
        Some(s) => {
            let mut out = Vec::new();
            for item in parse::list(s, "token.scopes")? {
                out.push(permission(ctx, item).await?);
            }
            Some(out)
        }
        None => None,
    };
    let expires_at = a.expires.map(|w| w.at(ctx.m.now(), Relative::Future));
    let (view, secret) = ctx
        .m
        .create_token(
            &ctx.p,
            NewToken {
                user,
                name: a.name,
                scopes,
                expires_at,
            },
        )
        .await?;
    if ctx.out.json {
        let doc = Zeroizing::new(
            serde_json::to_string_pretty(&json!({ "token": view, "secret": secret.as_str() }))
                .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?,
        );
        return ctx.out.raw(&format!("{}\n", doc.as_str()));
    }
    ctx.out.note(&format!(
        "token {} for {}: this is the only time it is shown; use it with --token or WGM_TOKEN",
        view.id, a.user
    ));
    ctx.out.raw(&format!("{}\n", secret.as_str()))
}
