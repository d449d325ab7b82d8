//! `autobump check`, `resolve` and `rewrite`: the offline tools.

use std::process::ExitCode;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use autobump::clock::SystemClock;

use autobump::policy::{self, Diagnostic};

use crate::{Output, RegistryArgs, ResolveArgs, RewriteArgs, plural, print_out};

/// Loads a file that must hold exactly one valid policy.
pub(crate) fn load_one_policy(file: &std::path::Path) -> anyhow::Result<policy::Policy> {
    let loaded = policy::load_paths(&[file.to_path_buf()])?;
    if !loaded.diagnostics.is_empty() {
        let problems: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        anyhow::bail!("invalid policy:\n{}", problems.join("\n"));
    }
    let mut policies = loaded.policies;
    if policies.len() != 1 {
        anyhow::bail!(
            "{}: expected exactly one policy, found {}",
            file.display(),
            policies.len()
        );
    }
    Ok(std::sync::Arc::unwrap_or_clone(policies.remove(0)))
}

pub(crate) fn resolve(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    use autobump::resolve::{Resolved, Resolver};

    let policy = load_one_policy(&args.policy)?;
    let source = &policy.spec.source;
    let scanned = autobump::files::scan_tree(
        &args.repo_dir,
        &source.include,
        &source.exclude,
        source.mode,
    )?;
    let references: Vec<_> = scanned
        .into_iter()
        .flat_map(|(_, found)| found.into_iter().map(|f| f.reference))
        .collect();

    let resolver = Resolver::new(args.registry.client()?);
    let now = autobump::clock::Clock::now(&SystemClock);
    // No store yet: nothing is recorded as bad.
    let bad = std::collections::BTreeSet::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results: Vec<_> = runtime.block_on(async {
        let mut all = Vec::new();
        for image in &policy.spec.images {
            all.extend(resolver.resolve(image, &references, &bad, now).await);
        }
        all
    });

    let failed = results
        .iter()
        .any(|r| matches!(r.outcome, Resolved::RegistryError { .. }));
    let mut text = String::new();
    match args.output {
        Output::Json => {
            text = serde_json::to_string_pretty(&results)?;
            text.push('\n');
        }
        Output::Text => {
            for r in &results {
                let what = r.outcome.describe();
                writeln!(text, "{} [{}] {}: {what}", r.image, r.series, r.current)?;
            }
        }
    }
    if results.is_empty() {
        eprintln!(
            "autobump: no references to the policy's images under {} (include: {})",
            args.repo_dir.display(),
            source
                .include
                .iter()
                .map(autobump::policy::values::Glob::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    print_out(&text)?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    files: usize,
    policies: usize,
    errors: &'a [Diagnostic],
}

pub(crate) fn check(paths: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    // Unreadable paths are exit 2 (through `main`); invalid policies are exit 1.
    let loaded = policy::load_paths(paths)?;
    let ok = loaded.diagnostics.is_empty();
    let mut text = String::new();
    match output {
        Output::Json => {
            text = serde_json::to_string_pretty(&CheckReport {
                ok,
                files: loaded.files.len(),
                policies: loaded.policies.len(),
                errors: &loaded.diagnostics,
            })?;
            text.push('\n');
        }
        Output::Text => {
            for d in &loaded.diagnostics {
                writeln!(text, "{d}")?;
            }
            let files = plural(loaded.files.len(), "file");
            if ok {
                writeln!(
                    text,
                    "ok: {} in {files}",
                    plural(loaded.policies.len(), "policy")
                )?;
            } else {
                let bad_files = {
                    let mut f: Vec<_> = loaded.diagnostics.iter().map(|d| &d.file).collect();
                    f.dedup();
                    f.len()
                };
                writeln!(
                    text,
                    "invalid: {} in {bad_files} of {files}; {} valid",
                    plural(loaded.diagnostics.len(), "error"),
                    plural(loaded.policies.len(), "policy")
                )?;
            }
        }
    }
    print_out(&text)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn rewrite(args: &RewriteArgs) -> anyhow::Result<ExitCode> {
    use autobump::core::rewrite::{Plan, Target, unified_diff};
    use autobump::policy::v1alpha1::RewriteMode;
    use autobump::policy::values::Glob;

    let globs = |texts: &[String]| -> anyhow::Result<Vec<Glob>> {
        texts
            .iter()
            .map(|t| t.parse::<Glob>().map_err(anyhow::Error::msg))
            .collect()
    };
    let mut targets = args
        .set
        .iter()
        .map(|s| s.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut mode = RewriteMode::Structured;
    let mut include = globs(&["**/*.yaml".into(), "**/*.yml".into()])?;
    let mut exclude = Vec::new();
    if let Some(file) = &args.policy {
        let p = load_one_policy(file)?;
        targets = targets
            .into_iter()
            .map(|t| t.with_policy(&p.spec.images))
            .collect::<Result<_, _>>()?;
        mode = p.spec.source.mode;
        include.clone_from(&p.spec.source.include);
        exclude.clone_from(&p.spec.source.exclude);
    }
    match args.mode.as_deref() {
        Some("text") => mode = RewriteMode::Text,
        Some(_) => mode = RewriteMode::Structured,
        None => {}
    }
    if !args.include.is_empty() {
        include = globs(&args.include)?;
    }
    if !args.exclude.is_empty() {
        exclude = globs(&args.exclude)?;
    }
    let plan = Plan::new(&targets)?;
    let tree = autobump::files::rewrite_tree(&args.dir, &include, &exclude, mode, &plan)?;
    for notice in &tree.notices {
        eprintln!("autobump: warning: {notice}");
    }
    let mut text = String::new();
    if args.dry_run {
        for f in &tree.files {
            text.push_str(&unified_diff(&f.path, &f.before, &f.after));
        }
    } else {
        tree.write(&args.dir)?;
        for c in tree.changes() {
            writeln!(text, "{}:{}: {} -> {}", c.file, c.line, c.old, c.new)?;
        }
    }
    print_out(&text)?;
    let changes = tree.changes().count();
    let scanned = plural(tree.scanned, "file");
    if changes == 0 {
        eprintln!("no changes ({scanned} scanned)");
    } else {
        let files = plural(tree.files.len(), "file");
        let verb = if args.dry_run {
            "would change"
        } else {
            "changed"
        };
        let note = if args.dry_run {
            "; dry run, nothing written"
        } else {
            ""
        };
        eprintln!(
            "{verb} {} in {files} ({scanned} scanned{note})",
            plural(changes, "reference")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry options of `resolve` and `run`.
impl RegistryArgs {
    /// The registry client these options describe (credentials from the Docker
    /// config, CA bundle, timeout, insecure hosts).
    pub(crate) fn client(&self) -> anyhow::Result<autobump::registry::RegistryClient> {
        use autobump::registry::{Credentials, RegistryClient, RegistryConfig};
        let credentials = match self.docker_config.clone().or_else(default_docker_config) {
            Some(path) => Credentials::from_docker_config_file(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            None => Credentials::anonymous(),
        };
        let mut defaults = RegistryConfig::default()
            .credentials(credentials)
            .call_timeout(
                self.registry_timeout
                    .delta()
                    .to_std()
                    .unwrap_or(std::time::Duration::from_secs(30)),
            );
        if let Some(ca) = &self.ca_bundle {
            defaults = defaults.ca_bundle(ca);
        }
        let mut client = RegistryClient::new(defaults.clone(), Arc::new(SystemClock))?;
        for host in &self.insecure_registries {
            client = client.with_registry(host, defaults.clone().insecure())?;
        }
        Ok(client)
    }
}

fn default_docker_config() -> Option<PathBuf> {
    let candidate = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    candidate.is_file().then_some(candidate)
}
