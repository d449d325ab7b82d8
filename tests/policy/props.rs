//! Property tests of the policy loader (convention: every parser of outside input):
//! random bytes, random YAML built from the policy's own vocabulary, and random edits
//! of a real policy never panic. Time stays bounded by construction (1 MiB files,
//! limited aliases and nesting); the case counts keep the run short.

use std::path::Path;

use autobump::policy;
use proptest::prelude::*;

/// `policies/prow.yaml`'s shape, the starting point of the random edits.
const POLICY: &str = include_str!("../../policies/prow.yaml");

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "spec",
        "images",
        "prefix",
        "tags",
        "dateSha",
        "semver",
        "range",
        "regex",
        "pattern",
        "extract",
        "consistent",
        "pinDigest",
        "source",
        "repo",
        "branch",
        "include",
        "exclude",
        "pullRequest",
        "directPush",
        "schedule",
        "timezone",
        "windows",
        "minInterval",
        "freezes",
        "from",
        "to",
        "reason",
        "merge",
        "method",
        "gate",
        "prometheus",
        "alerts",
        "bake",
        "rollout",
        "workloads",
        "rollback",
        "notify",
        "status",
        "<<",
    ])
}

fn scalar() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "autobump.dev/v1alpha1",
        "Autobump",
        "prow",
        "gcr.io/k8s-prow/",
        "{dateSha: {}}",
        "{semver: {range: '>=1.0'}}",
        "https://github.com/example/infra.git",
        "main",
        "America/Los_Angeles",
        "[\"Mon-Fri 09:00-17:00\"]",
        "1h",
        "0s",
        "squash",
        "{}",
        "[]",
        "&a x",
        "*a",
        "&b {k: v}",
        "*b",
        "&c [1, 2]",
        "[*c, *c]",
        "*nope",
        "'quoted'",
        "\"esc\\u00e9\"",
        "|",
        ">-",
        "!!str 1",
        "!!binary aGk=",
        "~",
        "null",
        "true",
        "0x1F",
        "1.20",
        "-.inf",
        "? complex",
        "[a, {b: [c, {d: e}]}]",
        "{a: 1, a: 2}",
        "@bad",
        "`tick",
        "%TAG",
        "\t",
        "",
    ])
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0usize..10, any::<bool>(), key(), scalar()).prop_map(|(indent, item, k, v)| {
            format!("{}{}{k}: {v}", " ".repeat(indent), if item { "- " } else { "" })
        }),
        1 => (0usize..10, scalar()).prop_map(|(indent, v)| format!("{}- {v}", " ".repeat(indent))),
        1 => Just("---".to_owned()),
        1 => Just("# comment".to_owned()),
    ]
}

/// A random edit of a text: replace, insert or delete a byte at a position.
fn edit() -> impl Strategy<Value = (usize, u8, u8)> {
    (any::<usize>(), 0u8..3, any::<u8>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let (policies, diagnostics) = policy::load_str(Path::new("random.yaml"), &text);
        for d in &diagnostics {
            prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
        }
        prop_assert!(policies.len() <= text.matches("kind").count());
    }

    #[test]
    fn random_yaml_never_panics_the_loader(lines in prop::collection::vec(line(), 0..60)) {
        let text = lines.join("\n");
        let (_, diagnostics) = policy::load_str(Path::new("random.yaml"), &text);
        for d in &diagnostics {
            prop_assert!(d.line >= 1 && d.column >= 1 && !d.message.is_empty(), "{d}");
        }
    }

    #[test]
    fn random_edits_of_a_real_policy_never_panic_the_loader(edits in prop::collection::vec(edit(), 1..12)) {
        let mut bytes = POLICY.as_bytes().to_vec();
        for (at, op, byte) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let (policies, diagnostics) = policy::load_str(Path::new("edited.yaml"), &text);
        prop_assert!(policies.len() <= 1);
        for d in &diagnostics {
            prop_assert!(d.file == Path::new("edited.yaml") && d.line >= 1 && d.column >= 1, "{d}");
        }
    }
}

proptest! {
    // Through the file system: random bytes as a file (not UTF-8, too short, ...).
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_files_never_panic_load_paths(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("random.yaml");
        std::fs::write(&file, &bytes).unwrap();
        match policy::load_paths(&[file]) {
            Ok(loaded) => prop_assert!(!loaded.diagnostics.is_empty() || !loaded.policies.is_empty()),
            Err(e) => prop_assert!(e.to_string().starts_with("no policies in "), "{e}"),
        }
    }
}
