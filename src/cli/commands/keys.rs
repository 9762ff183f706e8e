//! `agp keys status | rotate`: the vault's key-encryption keys.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the keyring: active key, every key and how many data keys it wraps.
    Status,
    /// Rotate the key-encryption key; old data keys are re-wrapped in the background.
    Rotate,
}

fn table(v: &Value) -> comfy_table::Table {
    let mut t = output::table(&["key", "data keys", "active"], &v["keys"], |k| {
        vec![
            get(k, "key_id"),
            get(k, "data_keys"),
            (k["key_id"] == v["active_key_id"]).to_string(),
        ]
    });
    t.add_row(vec![
        "pending re-wrap".to_string(),
        get(v, "pending_rewrap"),
        String::new(),
    ]);
    t
}

pub async fn run(global: &Global, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let v = match cmd {
        KeysCommand::Status => client.get("/keys").await?,
        KeysCommand::Rotate => client.post_empty("/keys/rotate").await?,
    };
    output::print(global.output, &v, table);
    Ok(ExitCode::SUCCESS)
}
