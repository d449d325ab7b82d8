//! `autobump hold`, `unhold` and `rollback`: the library operations of [`autobump::ops`] on the state file or an Autobump object's status.

use std::process::ExitCode;

use crate::HoldTarget;
use autobump::clock::SystemClock;

impl HoldTarget {
    /// Runs `f` on the store this target says (the state file, or the Autobump
    /// objects' status).
    pub(crate) fn with_store(
        &self,
        f: &mut dyn FnMut(&dyn autobump::store::Store) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use autobump::store::kube::{KubeStore, Scope};
        if !self.kubernetes {
            return f(&autobump::store::SqliteStore::open(&self.state.path)?);
        }
        // KubeStore blocks on this runtime from here (outside it), which needs the
        // multi-threaded kind to drive its I/O.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = runtime.block_on(async {
            autobump::install_crypto_provider();
            let client = kube::Client::try_default().await?;
            anyhow::Ok(KubeStore::new(
                client,
                self.namespace
                    .clone()
                    .map_or(Scope::AllNamespaces, Scope::Namespace),
            ))
        })?;
        f(&store)
    }
}

/// Who is running the command, for the hold's record.
pub(crate) fn operator() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

pub(crate) fn hold(name: &str, reason: &str, target: &HoldTarget) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::ops::HoldOutcome;
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is shown to whoever wonders why nothing deploys)");
    }
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = operator();
    let mut outcome = None;
    target.with_store(&mut |store| {
        outcome = Some(
            autobump::ops::hold(store, name, (&by, "cli"), reason, now)
                .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?,
        );
        Ok(())
    })?;
    match outcome {
        Some(HoldOutcome::AlreadyHeld(h)) => println!(
            "{name} is already held by {} since {} ({}); nothing changed",
            h.by, h.since, h.reason
        ),
        _ => println!("{name} held by {by}: {reason}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn unhold(name: &str, target: &HoldTarget) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = format!("{} (cli)", operator());
    let mut lifted = None;
    target.with_store(&mut |store| {
        lifted = autobump::ops::unhold(store, name, &by, now)
            .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
        Ok(())
    })?;
    match lifted {
        Some(h) => println!("{name}: lifted the hold by {} ({})", h.by, h.reason),
        None => println!("{name} is not held; nothing changed"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rollback(
    name: &str,
    reason: &str,
    to: Option<&str>,
    target: &HoldTarget,
) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::ops::Refusal;
    if let Some(version) = to {
        anyhow::bail!(
            "--to {version}: autobump can roll back only to the last known-good version; for \
             another one, hold the policy and write it by hand (autobump rewrite DIR --policy \
             FILE --set IMAGE={version}, then a commit and a PR; runbooks/procedures.md, \
             \"Break-glass: roll back without autobump\")"
        );
    }
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is shown in the hold and the rollback)");
    }
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = operator();
    let mut outcome = Ok((String::new(), String::new()));
    target.with_store(&mut |store| {
        outcome = autobump::ops::request_rollback(store, name, (&by, "cli"), reason, now)
            .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
        Ok(())
    })?;
    match outcome {
        Ok((current, good)) => {
            println!("{name}: rollback from {current} to {good} requested by {by}: {reason}");
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::Pending(r)) => {
            println!(
                "{name}: a rollback was already requested by {} at {} ({}); nothing changed",
                r.by, r.since, r.reason
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::Nothing(why)) => {
            eprintln!("autobump: {name}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
