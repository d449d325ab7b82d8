//! Property tests of the rewrite scanners (issue 14): any text, in both modes, never
//! panics, and a rewrite changes nothing when nothing matches. Work per case is
//! bounded by the input size (up to 4 KiB) and the case count.

use autobump::core::rewrite::{Plan, Target, rewrite_text, scan, scan_file};
use autobump::policy::v1alpha1::RewriteMode;
use proptest::prelude::*;

/// YAML-ish text: keys, image references, quotes, anchors, flow and block syntax,
/// comments and odd bytes, in any order.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("image: ".to_owned()),
        Just("- ".to_owned()),
        Just("\n".to_owned()),
        Just("  ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("# c\n".to_owned()),
        Just("|\n".to_owned()),
        Just("---\n".to_owned()),
        Just("\\".to_owned()),
        Just("FROM ".to_owned()),
        Just("ARG V=".to_owned()),
        Just("${V}".to_owned()),
        Just("{{ ".to_owned()),
        Just(" }}".to_owned()),
        Just("thanosImage: ".to_owned()),
        Just("images: [web=".to_owned()),
        Just("parameters:\n  - name: image.tag\n    value: ".to_owned()),
        Just("|-\n    ".to_owned()),
        Just("registry.example.com/team/app:1.2.3".to_owned()),
        Just("nginx:1.25.3-alpine@sha256:".to_owned()),
        Just("ghcr.io/o/r".to_owned()),
        "[a-z0-9.:/@_-]{0,16}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..200).prop_map(|parts| parts.concat())
}

fn modes() -> impl Strategy<Value = RewriteMode> {
    prop_oneof![Just(RewriteMode::Structured), Just(RewriteMode::Text)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scanning_any_text_never_panics(text in "(?s).{0,4096}", mode in modes()) {
        for found in scan(&text, mode) {
            prop_assert!(found.span.end <= text.len());
        }
    }

    #[test]
    fn scanning_and_rewriting_yamlish_text_never_panics(text in yamlish(), mode in modes()) {
        let found = scan(&text, mode);
        for f in &found {
            prop_assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
        }
        let targets = [
            Target::parse("registry.example.com/team/app=1.2.4").unwrap(),
            Target::parse("nginx=1.25.4-alpine").unwrap(),
        ];
        let (after, changes) = rewrite_text("f.yaml", &text, mode, &targets);
        if changes.is_empty() {
            prop_assert_eq!(after, text);
        }
    }

    /// Every reader (YAML with its nested block scalars and template fallback,
    /// Dockerfile, text) on any YAML-ish text: no panic, spans on character
    /// boundaries, and a rewrite that changes nothing leaves the text alone.
    #[test]
    fn every_reader_survives_any_text(text in yamlish(), file in prop_oneof![
        Just("Dockerfile"), Just("chart/templates/deploy.yaml"), Just("Makefile"), Just("cm.yaml"),
    ]) {
        for f in scan_file(file, &text, RewriteMode::Structured) {
            prop_assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
            for r in [f.tag_span.clone(), f.digest_span.clone()].into_iter().flatten() {
                prop_assert!(r.end <= text.len() && text.is_char_boundary(r.start));
            }
        }
        let plan = Plan::new(&[
            Target::parse("registry.example.com/team/app=1.2.4").unwrap(),
            Target::parse("nginx=1.25.4-alpine").unwrap(),
        ])
        .unwrap();
        let out = plan.rewrite(file, &text, RewriteMode::Structured);
        if out.changes.is_empty() {
            prop_assert_eq!(out.text.as_ref(), text.as_str());
        }
    }
}
