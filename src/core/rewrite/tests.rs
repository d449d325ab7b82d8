use super::*;

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn targets(sets: &[&str]) -> Vec<Target> {
    sets.iter().map(|s| s.parse().unwrap()).collect()
}

fn structured(text: &str, sets: &[&str]) -> String {
    rewrite_text("f.yaml", text, RewriteMode::Structured, &targets(sets)).0
}

#[test]
fn scan_finds_each_kind_with_positions() {
    let text = "\
# é gcr.io/a/b:v1 in a comment
kind: Deployment # ✓
spec:
  containers:
    - image: \"gcr.io/a/b:v1\"
images:
  - name: app
    newName: gcr.io/a/k
    newTag: v2
values:
  image: {registry: gcr.io, repository: a/h, tag: v3}
args: [--image=gcr.io/a/m:v4] # autobump: p
";
    let found = scan(text, RewriteMode::Structured);
    let got: Vec<(RefKind, String, usize, usize, &str)> = found
        .iter()
        .map(|f| {
            (
                f.kind,
                f.reference.to_string(),
                f.line,
                f.column,
                &text[f.tag_span.clone().unwrap()],
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (RefKind::ImageValue, "gcr.io/a/b:v1".into(), 5, 26, "v1"),
            (RefKind::Kustomize, "gcr.io/a/k:v2".into(), 9, 13, "v2"),
            (RefKind::HelmValues, "gcr.io/a/h:v3".into(), 11, 51, "v3"),
            (RefKind::Marker, "gcr.io/a/m:v4".into(), 12, 27, "v4"),
        ]
    );
    assert_eq!(&text[found[0].span.clone()], "gcr.io/a/b:v1");
    assert_eq!(&text[found[3].span.clone()], "gcr.io/a/m:v4");

    let text_mode = scan(text, RewriteMode::Text);
    let refs: Vec<String> = text_mode.iter().map(|f| f.reference.to_string()).collect();
    assert_eq!(refs, ["gcr.io/a/b:v1", "gcr.io/a/b:v1", "gcr.io/a/m:v4"]);
    assert!(text_mode.iter().all(|f| f.kind == RefKind::Text));
}

#[test]
fn non_ascii_before_a_reference_does_not_shift_spans() {
    let text = "a: \"日本語 ✓ 🚀\"\nb: 'é'\nimage: 'gcr.io/a/b:v1' # ü\n";
    let out = structured(text, &["gcr.io/a/b=v2"]);
    assert_eq!(out, text.replace("b:v1", "b:v2"));
}

#[test]
fn rewrites_byte_exactly() {
    let d = |t: &str| t.replace("{A}", A).replace("{B}", B);
    // (input, targets, expected output)
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "image: gcr.io/a/b:v1.0.0",
            &["gcr.io/a/b=v1.1.0"],
            "image: gcr.io/a/b:v1.1.0",
        ),
        (
            "image:   'gcr.io/a/b:v1.0.0'   # c\r\n",
            &["gcr.io/a/b=v1.1.0"],
            "image:   'gcr.io/a/b:v1.1.0'   # c\r\n",
        ),
        // A comment that mentions the image is left alone.
        (
            "# gcr.io/a/b:v1.0.0\nimage: gcr.io/a/b:v1.0.0\n",
            &["gcr.io/a/b=v1.1.0"],
            "# gcr.io/a/b:v1.0.0\nimage: gcr.io/a/b:v1.1.0\n",
        ),
        // Stale digest removed; new digest written; digest added.
        (
            "image: gcr.io/a/b:v1.0.0@{A}\n",
            &["gcr.io/a/b=v1.1.0"],
            "image: gcr.io/a/b:v1.1.0\n",
        ),
        (
            "image: gcr.io/a/b:v1.0.0@{A}\n",
            &["gcr.io/a/b=v1.1.0@{B}"],
            "image: gcr.io/a/b:v1.1.0@{B}\n",
        ),
        (
            "image: gcr.io/a/b:v1.0.0\n",
            &["gcr.io/a/b=v1.1.0@{B}"],
            "image: gcr.io/a/b:v1.1.0@{B}\n",
        ),
        // Helm: quoting guard for a bare tag YAML would read as a number.
        (
            "image:\n  repository: gcr.io/a/b\n  tag: build-1\n",
            &["gcr.io/a/b=build-2"],
            "image:\n  repository: gcr.io/a/b\n  tag: build-2\n",
        ),
        (
            "image:\n  repository: gcr.io/a/b\n  tag: 1.9\n",
            &["gcr.io/a/b=1.10"],
            "image:\n  repository: gcr.io/a/b\n  tag: \"1.10\"\n",
        ),
        // Helm: digest fields.
        (
            "image: {repository: gcr.io/a/b, tag: v1.0.0, digest: \"{A}\"}\n",
            &["gcr.io/a/b=v1.1.0"],
            "image: {repository: gcr.io/a/b, tag: v1.1.0, digest: \"\"}\n",
        ),
        (
            "image: {repository: gcr.io/a/b, tag: v1.0.0, digest: {A}}\n",
            &["gcr.io/a/b=v1.1.0"],
            "image: {repository: gcr.io/a/b, tag: v1.1.0, digest: \"\"}\n",
        ),
        (
            "image: {repository: gcr.io/a/b, tag: v1.0.0, digest: ''}\n",
            &["gcr.io/a/b=v1.1.0@{B}"],
            "image: {repository: gcr.io/a/b, tag: v1.1.0, digest: '{B}'}\n",
        ),
        (
            "image: {repository: gcr.io/a/b, tag: v1.0.0, digest: null}\n",
            &["gcr.io/a/b=v1.1.0@{B}"],
            "image: {repository: gcr.io/a/b, tag: v1.1.0, digest: {B}}\n",
        ),
        // Helm: no digest field, so the target's digest has nowhere to go.
        (
            "image: {repository: gcr.io/a/b, tag: v1.0.0}\n",
            &["gcr.io/a/b=v1.1.0@{B}"],
            "image: {repository: gcr.io/a/b, tag: v1.1.0}\n",
        ),
        // Kustomize: the tag is edited in newTag; name alone is the image.
        (
            "images:\n- name: gcr.io/a/b\n  newTag: v1.0.0\n- name: x\n  newName: gcr.io/a/b\n  newTag: 'v1.0.0'\n",
            &["gcr.io/a/b=v1.1.0"],
            "images:\n- name: gcr.io/a/b\n  newTag: v1.1.0\n- name: x\n  newName: gcr.io/a/b\n  newTag: 'v1.1.0'\n",
        ),
        // A complex key is never an image value.
        (
            "? {image: gcr.io/a/b:v1.0.0}\n: image\n",
            &["gcr.io/a/b=v1.1.0"],
            "? {image: gcr.io/a/b:v1.0.0}\n: image\n",
        ),
        // An image key whose value is a sequence or an alias is not a reference.
        (
            "image: [gcr.io/a/b:v1.0.0]\nx: &r gcr.io/a/b:v1.0.0\nimage2: *r\n",
            &["gcr.io/a/b=v1.1.0"],
            "image: [gcr.io/a/b:v1.0.0]\nx: &r gcr.io/a/b:v1.0.0\nimage2: *r\n",
        ),
        // A marker inside a block scalar is text, not a comment.
        (
            "script: |\n  x=gcr.io/a/b:v1.0.0 # autobump: p\nv: gcr.io/a/b:v1.0.0 # autobump: p\n",
            &["gcr.io/a/b=v1.1.0"],
            "script: |\n  x=gcr.io/a/b:v1.0.0 # autobump: p\nv: gcr.io/a/b:v1.1.0 # autobump: p\n",
        ),
    ];
    for (input, sets, want) in cases {
        let sets: Vec<String> = sets.iter().map(|s| d(s)).collect();
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        assert_eq!(structured(&d(input), &sets), d(want), "{input}");
    }
}

#[test]
fn changes_and_notices() {
    let text = format!(
        "a:\n  image: gcr.io/a/b:v1.0.0@{A}\n  escaped: x\n  image: \"gcr.io/a/b:v1.0.\\x30\"\n"
    );
    let plan = Plan::new(&targets(&["gcr.io/a/b=v1.1.0"])).unwrap();
    let r = plan.rewrite("dir/f.yaml", &text, RewriteMode::Structured);
    assert_eq!(
        r.changes,
        [Change {
            file: "dir/f.yaml".into(),
            line: 2,
            old: format!("gcr.io/a/b:v1.0.0@{A}"),
            new: "gcr.io/a/b:v1.1.0".into(),
            digest_tags: None,
        }]
    );
    assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
    assert_eq!(r.notices[0].line, 4);
    assert!(r.notices[0].message.contains("cannot be edited in place"));

    // A file that stops being YAML: references before the error are rewritten.
    let text = "image: gcr.io/a/b:v1.0.0\nkey: [unclosed\nimage: gcr.io/a/b:v1.0.0\n";
    let r = plan.rewrite("t.yaml", text, RewriteMode::Structured);
    assert_eq!(r.changes.len(), 1);
    assert!(
        r.notices[0].message.contains("not valid YAML"),
        "{:?}",
        r.notices
    );

    // Nothing watched in the file: it is not even parsed.
    let r = plan.rewrite("t.yaml", "key: [unclosed", RewriteMode::Structured);
    assert!(r.notices.is_empty() && r.changes.is_empty());
    assert!(matches!(r.text, Cow::Borrowed(_)));
}

#[test]
fn yaml_non_strings() {
    for s in [
        "1", "1.10", "1e3", "1_000", "0x1f", "0o17", ".5", "true", "yes", "null", "~", "",
    ] {
        assert!(yaml_reads_as_non_string(s), "{s}");
    }
    for s in [
        "1.2.3",
        "v1",
        "1.2-x",
        "build-1",
        "e1",
        "0xg",
        "sha256:aa",
        "1e",
    ] {
        assert!(!yaml_reads_as_non_string(s), "{s}");
    }
}

#[test]
fn unified_diff_has_git_headers() {
    let diff = unified_diff("x/f.yaml", "a\nb\n", "a\nc\n");
    assert_eq!(
        diff,
        "--- a/x/f.yaml\n+++ b/x/f.yaml\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
    );
    assert_eq!(unified_diff("f", "same", "same"), "");
}

/// Random YAML-ish files, deterministic per seed.
fn random_file(rng: &mut fastrand::Rng) -> String {
    const REPOS: &[&str] = &[
        "gcr.io/acme/app",
        "ghcr.io/acme/app",
        "nginx",
        "docker.io/library/nginx",
        "localhost:5000/team/app",
        "gcr.io/acme/other",
    ];
    const TAGS: &[&str] = &[
        "v20240101-aaaaaaa",
        "v20240101-aaaaaaa-master",
        "1.2.3",
        "latest",
        "latest-master",
    ];
    const FILLER: &[&str] = &[
        "# a comment: gcr.io/acme/app:v20240101-aaaaaaa",
        "name: \"ünïcödé ✓\"",
        "replicas: 3",
        "labels: {app: x, 'tier': \"web\"}",
        "---",
        "script: |\n  echo gcr.io/acme/app:1.2.3\n  done",
        "folded: >-\n  some text\n  nginx:1.2.3",
        "embedded: |-\n  spec:\n    image: gcr.io/acme/app:v20240101-aaaaaaa # c\n  other: nginx:1.2.3",
        "empty:",
        "list: [a, b, \"c\"]",
    ];
    let eol = if rng.bool() { "\r\n" } else { "\n" };
    let mut out = String::new();
    for i in 0..rng.usize(1..25) {
        let repo = REPOS[rng.usize(..REPOS.len())];
        let tag = TAGS[rng.usize(..TAGS.len())];
        let reference = if repo == "gcr.io/acme/other" {
            format!("{repo}:{tag}@{A}")
        } else {
            format!("{repo}:{tag}")
        };
        let quoted = match rng.u8(..3) {
            0 => reference.clone(),
            1 => format!("'{reference}'"),
            _ => format!("\"{reference}\""),
        };
        let key = match rng.u8(..3) {
            0 => "image",
            1 => "'image'",
            _ => "\"image\"",
        };
        let comment = if rng.bool() { "  # trailing é" } else { "" };
        let line = match rng.u8(..8) {
            0 => format!("c{i}:\n  - {key}: {quoted}{comment}"),
            1 => format!("f{i}: {{{key}: {quoted}, x: 1}}{comment}"),
            2 => format!("h{i}:\n  image:\n    repository: {repo}\n    tag: {tag}{comment}"),
            3 => format!("k{i}:\n  images:\n    - name: {repo}\n      newTag: \"{tag}\""),
            4 => format!("m{i}: --flag={reference} # autobump: p"),
            5 => format!("# {reference}"),
            6 => FILLER[rng.usize(..FILLER.len())].to_owned(),
            _ => format!("d{i}:\n  {key}: {quoted}{comment}"),
        };
        // Keys stay unique per document; `---` starts a new one.
        out.push_str(&line.replace('\n', eol));
        out.push_str(eol);
    }
    if rng.bool() {
        out.truncate(out.len() - eol.len());
    }
    out
}

#[test]
fn rewriting_there_and_back_restores_every_byte() {
    let forward = targets(&[
        "gcr.io/acme/app=v20240202-bbbbbbb",
        "gcr.io/acme/app=v20240202-bbbbbbb-master",
        "nginx=1.3.0",
        "localhost:5000/team/=v20240303-ccccccc",
        &format!("gcr.io/acme/other=v20240202-bbbbbbb@{B}"),
        &format!("gcr.io/acme/other=v20240202-bbbbbbb-master@{B}"),
        &format!("gcr.io/acme/other=1.3.0@{B}"),
    ]);
    let back = targets(&[
        "gcr.io/acme/app=v20240101-aaaaaaa",
        "gcr.io/acme/app=v20240101-aaaaaaa-master",
        "nginx=1.2.3",
        "localhost:5000/team/=v20240101-aaaaaaa",
        &format!("gcr.io/acme/other=v20240101-aaaaaaa@{A}"),
        &format!("gcr.io/acme/other=v20240101-aaaaaaa-master@{A}"),
        &format!("gcr.io/acme/other=1.2.3@{A}"),
    ]);
    let (forward, back) = (Plan::new(&forward).unwrap(), Plan::new(&back).unwrap());
    let mut changed_files = 0;
    for seed in 0..400 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let original = random_file(&mut rng);
        for mode in [RewriteMode::Structured, RewriteMode::Text] {
            let there = forward.rewrite("f.yaml", &original, mode);
            let again = back.rewrite("f.yaml", &there.text, mode);
            assert_eq!(
                again.text, original,
                "seed {seed} {mode:?}: round trip differs\n--- there:\n{}",
                there.text
            );
            assert_eq!(there.changes.len(), again.changes.len(), "seed {seed}");
            // Only tag and digest bytes changed: the same number of lines, and each
            // changed line still holds the same repository text.
            assert_eq!(there.text.lines().count(), original.lines().count());
            if !there.changes.is_empty() {
                changed_files += 1;
            }
            // Structured rewriting never breaks (or fixes) the YAML.
            if mode == RewriteMode::Structured {
                let errors = |t: &str| {
                    saphyr_parser::Parser::new_from_str(t)
                        .filter(Result::is_err)
                        .count()
                };
                assert_eq!(errors(&original), errors(&there.text), "seed {seed}");
                // Comments are never touched in structured mode.
                for (a, b) in original.lines().zip(there.text.lines()) {
                    if a.trim_start().starts_with('#') {
                        assert_eq!(a, b, "seed {seed}");
                    }
                }
            }
        }
    }
    assert!(
        changed_files > 300,
        "the generator rarely hits: {changed_files}"
    );
}

/// Rewrites `text` as the file `file` (its name picks the reader) in structured mode.
fn as_file(file: &str, text: &str, sets: &[&str]) -> Rewritten<'static> {
    let plan = Plan::new(&targets(sets)).unwrap();
    let r = plan.rewrite(file, text, RewriteMode::Structured);
    Rewritten {
        text: Cow::Owned(r.text.into_owned()),
        changes: r.changes,
        notices: r.notices,
    }
}

#[test]
fn readers_by_file_name() {
    for (file, want) in [
        ("a/b.yaml", Reader::Yaml),
        ("x.YML", Reader::Yaml),
        ("x.json", Reader::Yaml),
        ("Dockerfile", Reader::Dockerfile),
        ("build/Dockerfile.release", Reader::Dockerfile),
        ("app.dockerfile", Reader::Dockerfile),
        ("Containerfile", Reader::Dockerfile),
        ("run.sh", Reader::Text),
        ("README.md", Reader::Text),
        ("", Reader::Yaml),
    ] {
        assert_eq!(Reader::for_file(file), want, "{file}");
    }
}

/// YAML inside literal block scalars: the tag bytes change in place, every other
/// byte (indentation, chomping indicator, CRLF) stays.
#[test]
fn block_scalars_are_read_as_yaml_and_edited_in_place() {
    let cases: &[(&str, &str)] = &[
        (
            "data:\n  t.yaml: |-\n    spec:\n      image: gcr.io/a/b:v1.0.0\n      args: [x]\n  other: 1\n",
            "data:\n  t.yaml: |-\n    spec:\n      image: gcr.io/a/b:v1.1.0\n      args: [x]\n  other: 1\n",
        ),
        (
            "helm:\r\n  values: |+\r\n    image:\r\n      repository: gcr.io/a/b\r\n      tag: \"v1.0.0\"\r\n\r\n",
            "helm:\r\n  values: |+\r\n    image:\r\n      repository: gcr.io/a/b\r\n      tag: \"v1.1.0\"\r\n\r\n",
        ),
        // Nested twice: a ConfigMap holding an Application holding values.
        (
            "data:\n  app.yaml: |\n    helm:\n      values: |\n        web:\n          image: gcr.io/a/b:v1.0.0 # pinned\n",
            "data:\n  app.yaml: |\n    helm:\n      values: |\n        web:\n          image: gcr.io/a/b:v1.1.0 # pinned\n",
        ),
        // A folded scalar is prose, and a script is not YAML: both left alone.
        (
            "a: >\n  image: gcr.io/a/b:v1.0.0\nb: |\n  docker run gcr.io/a/b:v1.0.0\n",
            "a: >\n  image: gcr.io/a/b:v1.0.0\nb: |\n  docker run gcr.io/a/b:v1.0.0\n",
        ),
    ];
    for (input, want) in cases {
        let r = as_file("cm.yaml", input, &["gcr.io/a/b=v1.1.0"]);
        assert_eq!(r.text, *want, "{input}");
        assert!(r.notices.is_empty(), "{:?}", r.notices);
    }
    let found = scan(cases[0].0, RewriteMode::Structured);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].line, found[0].column), (4, 25));
}

#[test]
fn image_keys_in_both_forms() {
    let input = "thanosImage:\n  registry: quay.io\n  repository: thanos/thanos\n  tag: v0.34.0\nmlmdImage: gcr.io/a/mlmd:v0.34.0\nnode_image: gcr.io/a/node:v0.34.0\nimagePullPolicy: gcr.io/a/b:v0.34.0\n";
    let r = as_file(
        "values.yaml",
        input,
        &["quay.io/thanos/thanos=v0.35.0", "gcr.io/a/=v0.35.0"],
    );
    assert_eq!(
        r.text,
        input
            .replace("tag: v0.34.0", "tag: v0.35.0")
            .replace("mlmd:v0.34.0", "mlmd:v0.35.0")
            .replace("node:v0.34.0", "node:v0.35.0")
    );
    assert_eq!(r.changes.len(), 3);
    // A boolean or a number under an image key is not a name, nor is a bare word
    // under a key that merely ends in `Image`.
    assert!(
        scan(
            "useDefaultImage: true\nimage: 1.5\nbaseImage: ~\ndefaultImage: app\n",
            RewriteMode::Structured
        )
        .is_empty()
    );
}

#[test]
fn argo_cd_alias_images_and_helm_parameters() {
    let input = "kustomize:\n  images:\n    - web=ghcr.io/acme/web:v2.0.0\n    - 'ghcr.io/acme/api:v2.0.0'\nhelm:\n  parameters:\n    - name: image.repository\n      value: ghcr.io/acme/web\n    - name: replicas\n      value: \"2\"\n    - name: image.tag\n      value: v2.0.0\n    - name: worker.image\n      value: ghcr.io/acme/api:v2.0.0\n";
    let r = as_file("app.yaml", input, &["ghcr.io/acme/=v2.1.0"]);
    assert_eq!(r.text, input.replace("v2.0.0", "v2.1.0"));
    assert_eq!(r.changes.len(), 4);
    let kinds: Vec<RefKind> = scan(input, RewriteMode::Structured)
        .iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            RefKind::ImageValue,
            RefKind::ImageValue,
            RefKind::HelmParameter,
            RefKind::HelmParameter
        ]
    );
}

#[test]
fn helm_templates_are_read_line_by_line_never_inside_actions() {
    let input = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include \"x.fullname\" . }}
spec:
  template:
    spec:
      containers:
{{- if .Values.nginx.enabled }}
        - name: nginx
          image: library/nginx:1.25-alpine
{{- end }}
        - name: app
          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"
        - name: sidecar
          image: gcr.io/a/b:{{ .Chart.AppVersion }}
      initContainers:
        - name: init
          image:
            repository: gcr.io/a/b
            tag: v1.0.0 # {{ not an action here }}
";
    let r = as_file(
        "chart/templates/deploy.yaml",
        input,
        &["library/nginx=1.27-alpine", "gcr.io/a/b=v1.1.0"],
    );
    assert_eq!(
        r.text,
        input
            .replace("nginx:1.25-alpine", "nginx:1.27-alpine")
            .replace("tag: v1.0.0", "tag: v1.1.0")
    );
    assert!(r.notices.is_empty(), "{:?}", r.notices);
}

#[test]
fn dockerfile_from_lines() {
    let input = "\
# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22.5
ARG BASE=\"gcr.io/distroless/static:v20240101-aaaaaaa\"
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder
FROM golang:${GO_VERSION}-alpine AS alpine
COPY --from=builder /out /out
FROM builder AS test
FROM \\
    gcr.io/a/b:v1.0.0 AS tools
FROM ${BASE}
COPY --from=gcr.io/a/b:v1.0.0 /bin/tool /bin/tool
";
    let r = as_file(
        "Dockerfile",
        input,
        &[
            "golang=1.23.0",
            "golang=1.23.0-alpine",
            "gcr.io/distroless/static=v20240202-bbbbbbb",
            "gcr.io/a/b=v1.1.0",
        ],
    );
    assert_eq!(
        r.text,
        input
            .replace("v20240101-aaaaaaa", "v20240202-bbbbbbb")
            .replace("b:v1.0.0", "b:v1.1.0")
    );
    // `golang:${GO_VERSION}-alpine` puts its tag together from two places, and
    // GO_VERSION is in two different images: moving it for one would move the other.
    assert_eq!(r.notices.len(), 2, "{:?}", r.notices);
    assert_eq!(r.notices[0].line, 4);
    assert!(r.notices[0].message.contains("other FROM lines"));
    assert_eq!(r.notices[1].line, 5);
    assert!(r.notices[1].message.contains("several ARG values"));
    assert_eq!(r.changes.len(), 3, "{:?}", r.changes);

    // An ARG default in one image only is edited where it is written.
    let single = "ARG GO_VERSION=1.22.5\nFROM golang:${GO_VERSION} AS builder\nFROM builder\n";
    let r = as_file("Dockerfile", single, &["golang=1.23.0"]);
    assert_eq!(r.text, single.replace("1.22.5", "1.23.0"));
    assert_eq!(r.changes[0].line, 1);
}

#[test]
fn digest_only_references_move_through_known_digests() {
    let input = format!("image: gcr.io/k/controller@{A}\nother: gcr.io/k/webhook@{A}\n");
    let plan = Plan::new(&targets(&[&format!("gcr.io/k/controller=v1.2.0@{B}")]))
        .unwrap()
        .with_digest_tags([DigestTag {
            image: "gcr.io/k/controller".into(),
            digest: A.into(),
            tag: "v1.1.0".into(),
        }]);
    let r = plan.rewrite("release.yaml", &input, RewriteMode::Structured);
    assert_eq!(r.text, input.replacen(A, B, 1));
    assert_eq!(
        r.changes[0].digest_tags,
        Some(DigestTags {
            old: "v1.1.0".into(),
            new: "v1.2.0".into()
        })
    );
    assert_eq!(r.changes[0].new, format!("gcr.io/k/controller@{B}"));
    // Unknown digest, or no digest to move to: nothing moves.
    let unknown = Plan::new(&targets(&[&format!("gcr.io/k/controller=v1.2.0@{B}")])).unwrap();
    assert!(
        unknown
            .rewrite("r.yaml", &input, RewriteMode::Structured)
            .changes
            .is_empty()
    );
    let unpinned = Plan::new(&targets(&["gcr.io/k/controller=v1.2.0"]))
        .unwrap()
        .with_digest_tags([DigestTag {
            image: "gcr.io/k/controller".into(),
            digest: A.into(),
            tag: "v1.1.0".into(),
        }]);
    assert!(
        unpinned
            .rewrite("r.yaml", &input, RewriteMode::Structured)
            .changes
            .is_empty()
    );
}
