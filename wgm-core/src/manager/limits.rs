//! The limits on a server's lists and free text, checked where they enter through the
//! manager (`create_server`, `import_server`, `update_server`): each DNS list
//! ([`crate::net::check_dns_list`]: at most 16 entries, none twice, each in its strict
//! form) and the informational `config_path` ([`crate::names::check_path_text`]).
//!
//! Kept apart from `servers.rs`, which calls one method per entry point.

use super::servers::{NewServer, ServerUpdate};
use crate::model::ClientTemplate;
use crate::names::check_path_text;
use crate::net::check_dns_list;
use crate::Result;

impl NewServer {
    /// Check the lists and free text of a server about to be created; errors name
    /// `{field}.dns[i]`, `{field}.client_template.dns[i]`, `{field}.config_path`.
    pub(super) fn check_limits(&self, field: &str) -> Result<()> {
        check_dns_list(&self.dns, &format!("{field}.dns"))?;
        check_template(&self.client_template, field)?;
        if let Some(p) = &self.config_path {
            check_path_text(p, format!("{field}.config_path"))?;
        }
        Ok(())
    }
}

impl ServerUpdate {
    /// Check the lists and free text an update sets; errors name `server.dns[i]`,
    /// `server.client_template.dns[i]`, `server.config_path`.
    pub(super) fn check_limits(&self) -> Result<()> {
        if let Some(dns) = &self.dns {
            check_dns_list(dns, "server.dns")?;
        }
        if let Some(t) = &self.client_template {
            check_template(t, "server")?;
        }
        if let Some(Some(p)) = &self.config_path {
            check_path_text(p, "server.config_path")?;
        }
        Ok(())
    }
}

fn check_template(t: &ClientTemplate, field: &str) -> Result<()> {
    match &t.dns {
        Some(dns) => check_dns_list(dns, &format!("{field}.client_template.dns")),
        None => Ok(()),
    }
}
