//! `mssql-emulator`: runs the emulator until interrupted.

use clap::Parser;
use mssql_emulator::{Config, Emulator, TlsMode};
use std::net::SocketAddr;
use std::path::PathBuf;

/// SQL Server emulator for tests (TDS 7.4, SQL Server 2022 catalog semantics).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TDS listen address (loopback only).
    #[arg(long, env = "MSSQL_EMULATOR_LISTEN", default_value = "127.0.0.1:1433")]
    listen: SocketAddr,
    /// Admin HTTP listen address (loopback only); port 0 picks one and prints it.
    #[arg(long, env = "MSSQL_EMULATOR_ADMIN", default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Password of the `sa` login.
    #[arg(long, env = "MSSQL_EMULATOR_SA_PASSWORD")]
    sa_password: String,
    /// Encryption offered in PRELOGIN: none, off (TLS offered) or required.
    #[arg(long, default_value = "off")]
    tls: TlsMode,
    /// PEM certificate chain (with --key); a self-signed one is generated otherwise.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// @@SERVERNAME.
    #[arg(long, default_value = "mssql-emulator")]
    server_name: String,
    /// SERVERPROPERTY('EngineEdition'): 3 for SQL Server, 5 to imitate Azure SQL Database.
    #[arg(long, default_value_t = 3)]
    engine_edition: i64,
    /// HS256 key Entra tokens must be signed with (unchecked when absent).
    #[arg(long, env = "MSSQL_EMULATOR_FEDAUTH_KEY")]
    fedauth_hs256_key: Option<String>,
    /// Seed for SIDs, salts and NEWID() (deterministic catalogs).
    #[arg(long)]
    seed: Option<u64>,
    /// Stub Entra directory for `CREATE LOGIN|USER … FROM EXTERNAL PROVIDER` by name:
    /// `name=<object id>` (an application or user, type E) or `name=<object id>:group`
    /// (type X); repeatable, or comma-separated in the environment variable.
    #[arg(long = "entra-principal", env = "MSSQL_EMULATOR_ENTRA_DIRECTORY", value_delimiter = ',', value_parser = entra_principal)]
    entra_principals: Vec<mssql_emulator::catalog::EntraPrincipal>,
    /// Catalog snapshot: loaded at start if it exists, written on Ctrl-C.
    #[arg(long)]
    state: Option<PathBuf>,
}

fn entra_principal(text: &str) -> Result<mssql_emulator::catalog::EntraPrincipal, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=<object id>[:group]"))?;
    let (object_id, group) = match rest.strip_suffix(":group") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    if name.is_empty() || object_id.len() != 36 {
        return Err(format!("{text:?} is not name=<object id>[:group]"));
    }
    Ok(mssql_emulator::catalog::EntraPrincipal {
        name: name.to_owned(),
        object_id: object_id.to_owned(),
        group,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut identity = mssql_emulator::Identity {
        server_name: args.server_name,
        engine_edition: args.engine_edition,
        ..Default::default()
    };
    if identity.engine_edition == 5 {
        identity.edition = "SQL Azure".into();
    }
    let cfg = Config {
        listen: args.listen,
        admin_listen: args.admin,
        sa_password: args.sa_password,
        tls: args.tls,
        cert: args.cert.zip(args.key),
        identity,
        fedauth_hs256_key: args.fedauth_hs256_key.map(String::into_bytes),
        seed: args.seed,
        clock_ms: None,
        entra_directory: args.entra_principals,
        state_file: args.state,
    };
    let emu = Emulator::start(cfg).await?;
    // One machine-readable line so scripts can find both ports.
    println!(
        "{}",
        serde_json::json!({"tds": emu.addr().to_string(), "admin": emu.admin_addr().to_string()})
    );
    tokio::signal::ctrl_c().await?;
    emu.shutdown().await;
    Ok(())
}
