//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use wgm_core::model::Page;

use super::Errors;
use crate::auth::{authenticate, bearer};
use crate::dto::Health;
use crate::error::ApiResult;
use crate::metrics::{PeerLabels, PeerSample};
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// The store answers (its schema was migrated when this process opened it).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "Ready: the store answers and holds this build's schema", body = Health),
              (status = 503, description = "The store does not answer, or holds another schema version", body = Health)))]
pub async fn ready(State(s): State<AppState>) -> Response {
    let probe =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.store.schema_version()).await;
    let unready =
        |status: String| (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status })).into_response();
    match probe {
        Ok(Ok(v)) if v.is_current() => Json(Health {
            status: "ok".to_owned(),
        })
        .into_response(),
        Ok(Ok(v)) => {
            tracing::warn!(
                found = v.found,
                known = v.known,
                "not ready: the store's schema is not this build's"
            );
            unready(format!(
                "store: schema version {} where this build works with {}",
                v.found, v.known
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store failed");
            unready(format!("store: {}", e.code()))
        }
        Err(_) => unready("store: no answer within 5 s".to_owned()),
    }
}

/// Prometheus metrics. With a bearer credential, also the WireGuard metrics of every
/// peer that principal may read, as last observed on its host.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), Errors),
    security((), ("bearer" = [])))]
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let mut peers = Vec::new();
    if headers.contains_key(header::AUTHORIZATION) {
        let c = authenticate(&s, bearer(&headers)?).await?;
        let servers = s
            .op("server.list", s.m.list_servers(&c.p, Page::ALL))
            .await?;
        for sv in servers {
            // Deleted since, or not readable in full by this principal: skipped.
            let Ok(list) = s.m.list_peers(&c.p, sv.id).await else {
                continue;
            };
            for p in list {
                peers.push(PeerSample {
                    labels: PeerLabels {
                        interface: sv.interface.to_string(),
                        public_key: p.public_key.to_base64(),
                        allowed_ips: p
                            .allowed_ips
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        name: p.name.to_string(),
                    },
                    sent: p.stats.tx_bytes,
                    received: p.stats.rx_bytes,
                    handshake: p
                        .stats
                        .last_seen
                        .map_or(0, time::OffsetDateTime::unix_timestamp),
                });
            }
        }
    }
    let text = s.metrics.encode(&peers);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
