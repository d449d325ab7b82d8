//! `autobump status`: the policies' state as a table or JSON, from the state file or the cluster.

use std::process::ExitCode;

use std::path::PathBuf;

use autobump::clock::SystemClock;
use autobump::policy;

use crate::{HoldTarget, Output, StateArgs, print_out};

/// Prints `autobump status` rows as a table or as JSON.
pub(crate) fn print_status(
    rows: &[autobump::status::StatusRow],
    now: chrono::DateTime<chrono::Utc>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    match output {
        Output::Text => print_out(&autobump::status::table(rows, now))?,
        Output::Json => print_out(&(serde_json::to_string_pretty(rows)? + "\n"))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `autobump status --kubernetes`: the same table from the objects' status.
pub(crate) fn cluster_status(namespace: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::policy::{Autobump, Policy};
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let objects = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let api: kube::Api<Autobump> = match namespace {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::all(client),
        };
        anyhow::Ok(api.list(&kube::api::ListParams::default()).await?.items)
    })?;
    let mut policies = Vec::new();
    let mut states = std::collections::BTreeMap::new();
    for object in &objects {
        let key = format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or("default"),
            object.metadata.name.as_deref().unwrap_or_default()
        );
        match Policy::from_resource(object) {
            Ok(p) => policies.push((key.clone(), p)),
            Err(problems) => eprintln!("autobump: {key}: {}", problems.join("; ")),
        }
        let state = object
            .status
            .as_ref()
            .map(autobump::store::kube::state_of)
            .unwrap_or_default();
        states.insert(key, state);
    }
    // Rows are keyed by namespace/name: the same name may exist in two namespaces.
    let keyed: Vec<(String, &Policy)> = policies.iter().map(|(k, p)| (k.clone(), p)).collect();
    let rows = autobump::status::rows_keyed(&keyed, &states, now);
    if rows.is_empty() {
        eprintln!(
            "autobump: no Autobump objects in {} of the cluster ($KUBECONFIG or in-cluster); \
             create one with: kubectl apply -f POLICY.yaml (autobump check POLICY.yaml first)",
            namespace.map_or_else(
                || "any namespace".to_owned(),
                |ns| format!("namespace {ns}")
            ),
        );
        if output == Output::Text {
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_status(&rows, now, output)
}

pub(crate) fn status(
    state: &StateArgs,
    policies: &[PathBuf],
    output: Output,
) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let states = autobump::store::sqlite::load_existing(&state.path)?;
    let loaded = if policies.is_empty() {
        Vec::new()
    } else {
        let loaded = policy::load_paths(policies)?;
        for d in &loaded.diagnostics {
            eprintln!("autobump: {d}");
        }
        loaded.policies
    };
    let rows = autobump::status::rows(&loaded, &states, now);
    if rows.is_empty() {
        // An empty table says nothing; say where we looked and how to begin.
        let paths = autobump::store::sqlite::StatePaths::of(&state.path);
        let what = if paths.db.exists() || paths.json.exists() {
            "holds no policy yet"
        } else {
            "does not exist"
        };
        eprintln!(
            "autobump: no policies: the state file {} {what}, and no --policies were given.\n\
             It is written by autobump run; start it with:\n  \
             autobump run --policies policies/ --state {}\n\
             (or point --state / $AUTOBUMP_STATE at the state file it writes; \
             for Autobump objects in a cluster: autobump status --kubernetes)",
            state.path.display(),
            state.path.display(),
        );
        if output == Output::Text {
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_status(&rows, now, output)
}

/// `autobump history`: the library formats, this prints.
pub(crate) fn history(
    name: &str,
    since: Option<&str>,
    output: Output,
    target: &HoldTarget,
) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::store::history::{Format, parse_since, report};
    let since = since
        .map(|s| parse_since(s, SystemClock.now()))
        .transpose()?;
    let format = match output {
        Output::Text => Format::Text,
        Output::Json => Format::Json,
    };
    let mut text = String::new();
    target.with_store(&mut |store| {
        text = report(store, name, since, format)?;
        Ok(())
    })?;
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
