//! Secrets never leave through what autobump writes for people: a whole `autobump
//! run --once` (debug JSON logs), the state it keeps (`status`, `history`), its
//! errors and its notifications are searched for every secret it was given or
//! obtained (see [`SecretWorld`]). The cluster-mode twin (Events, object status) is
//! in tests/cluster/secrets.rs.

use super::support::secret_world::SecretWorld;

async fn output(mut command: tokio::process::Command) -> (Option<i32>, String) {
    let out = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn no_secret_reaches_logs_state_errors_or_notifications() {
    let world = SecretWorld::start().await;
    world.write_policies();
    let mut args: Vec<String> = ["run", "--once", "--policies", "policies"]
        .into_iter()
        .chain(["--state", "state.db", "--cache-dir", "cache"])
        .map(str::to_owned)
        .collect();
    args.extend(world.run_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, log) = output(world.command(&args)).await;
    assert!(code.is_some(), "{log}");
    world.assert_secrets_in_use(&log).await;

    let mut outputs = vec![("run".to_owned(), log)];
    for args in [
        &[
            "status",
            "--state",
            "state.db",
            "--policies",
            "policies",
            "--output",
            "json",
        ][..],
        &["history", "prow", "--state", "state.db", "--output", "json"],
        &["history", "api", "--state", "state.db", "--output", "json"],
    ] {
        let (_, text) = output(world.command(args)).await;
        outputs.push((args.join(" "), text));
    }
    for text in world.notifications() {
        outputs.push(("a notification".to_owned(), text));
    }
    SecretWorld::assert_no_secret_in(&outputs);
}
