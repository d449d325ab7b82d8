//! The text of autobump pull requests, built only from plan data (pure); commit
//! messages are built from the rewrite's changes by [`crate::repo::commit_message`].
//!
//! No timestamps, no randomness, no environment: the same bump always produces the
//! same title and body, so a re-run finds nothing to edit and pushes
//! nothing (convention 10). A hidden marker in the body names the policy, so
//! autobump recognises its PRs even if someone renames the branch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::reference::ImageRef;
use super::rewrite::Change;
use super::tags::parse_date_sha;

/// One image moving from one version to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// The image repository as written in the manifests.
    pub image: String,
    /// The version it is at (`tag` or `tag@digest`).
    pub from: String,
    /// The version it moves to.
    pub to: String,
}

/// The rows of a bump's changes: one per image and version pair, sorted. A version
/// is the tag, with `@digest` when pinned; a digest-only reference
/// (`repo@sha256:…`) is shown as the tag its digest is the digest of
/// ([`Change::digest_tags`]) with that digest, so the title and the table name tags
/// for it too. Changes whose references do not parse are left out.
#[must_use]
pub fn rows<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Vec<Row> {
    let version = |r: &ImageRef, tag: Option<&str>| {
        let mut v = r.tag.as_deref().or(tag).unwrap_or_default().to_owned();
        if let Some(d) = &r.digest {
            v.push('@');
            v.push_str(d);
        }
        v
    };
    let mut rows: Vec<Row> = changes
        .into_iter()
        .filter_map(|c| {
            let (old, new) = (ImageRef::parse(&c.old)?, ImageRef::parse(&c.new)?);
            let tags = c.digest_tags.as_ref();
            Some(Row {
                image: old.repository.clone(),
                from: version(&old, tags.map(|t| t.old.as_str())),
                to: version(&new, tags.map(|t| t.new.as_str())),
            })
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows
}

/// What a bump PR is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The moves, in any order (they are sorted).
    pub rows: Vec<Row>,
    /// Source repositories by image, for compare links.
    pub source_repos: BTreeMap<String, String>,
    /// The labels the PR carries.
    pub labels: &'a [String],
    /// With promotion: where the versions were proven (Markdown,
    /// [`super::promotion::evidence`]).
    pub evidence: Option<&'a str>,
}

/// The marker that identifies a policy's PRs.
#[must_use]
pub fn marker(policy: &str) -> String {
    format!("<!-- autobump:policy={policy} -->")
}

/// Whether a PR body carries `policy`'s marker.
#[must_use]
pub fn has_marker(body: &str, policy: &str) -> bool {
    body.contains(&marker(policy))
}

/// The policy whose marker a PR body carries, if any: a bump PR's
/// (`autobump:policy=`) or a rollback PR's (`autobump:rollback=`).
#[must_use]
pub fn marked_policy(body: &str) -> Option<&str> {
    ["<!-- autobump:policy=", "<!-- autobump:rollback="]
        .iter()
        .find_map(|prefix| {
            let rest = &body[body.find(prefix)? + prefix.len()..];
            let name = &rest[..rest.find(" -->")?];
            (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
        })
}

fn tag_of(version: &str) -> &str {
    version.split('@').next().unwrap_or(version)
}

fn sorted(rows: &[Row]) -> Vec<Row> {
    let mut rows = rows.to_vec();
    rows.sort();
    rows.dedup();
    rows
}

/// The PR title: the one image and its move, or the count and the common new tag.
#[must_use]
pub fn title(bump: &Bump<'_>) -> String {
    let rows = sorted(&bump.rows);
    let mut targets: Vec<&str> = rows.iter().map(|r| tag_of(&r.to)).collect();
    targets.sort_unstable();
    targets.dedup();
    match (rows.as_slice(), targets.as_slice()) {
        ([one], _) => format!(
            "autobump({}): {} {} → {}",
            bump.policy,
            one.image,
            tag_of(&one.from),
            tag_of(&one.to)
        ),
        (_, [tag]) => format!("autobump({}): {} images → {tag}", bump.policy, rows.len()),
        _ => format!(
            "autobump({}): {} images to {} versions",
            bump.policy,
            rows.len(),
            targets.len()
        ),
    }
}

/// A compare link between the commits two date-sha tags carry, when the image's
/// source repository is known.
fn compare_link(bump: &Bump<'_>, row: &Row) -> Option<String> {
    let repo = bump.source_repos.get(&row.image)?;
    let from = parse_date_sha(tag_of(&row.from))?;
    let to = parse_date_sha(tag_of(&row.to))?;
    (from.hex != to.hex).then(|| {
        format!(
            "{}/compare/{}...{}",
            repo.trim_end_matches('/'),
            from.hex,
            to.hex
        )
    })
}

/// The PR body: a table of moves, compare links, the labels and the marker.
#[must_use]
pub fn body(bump: &Bump<'_>) -> String {
    let rows = sorted(&bump.rows);
    let mut out = format!(
        "Automated image bump for policy `{}`.\n\n| Image | From | To | Changes |\n|---|---|---|---|\n",
        bump.policy
    );
    for row in &rows {
        let changes =
            compare_link(bump, row).map_or_else(String::new, |l| format!("[compare]({l})"));
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {changes} |",
            row.image, row.from, row.to
        );
    }
    if let Some(evidence) = bump.evidence {
        let _ = write!(out, "\n{}", evidence.trim_end());
        out.push('\n');
    }
    if !bump.labels.is_empty() {
        let _ = write!(out, "\nLabels: {}\n", bump.labels.join(", "));
    }
    out.push_str(
        "\nautobump merges this PR itself once its checks pass inside the policy's \
         schedule window and no alert fires. Comment `/hold` to pause the policy, \
         `/unhold` to resume.\n\n",
    );
    out.push_str(&marker(bump.policy));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(image: &str, from: &str, to: &str) -> Row {
        Row {
            image: image.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    fn prow(rows: Vec<Row>) -> Bump<'static> {
        static LABELS: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["skip-review".to_owned()]);
        Bump {
            policy: "prow",
            rows,
            source_repos: [(
                "gcr.io/k8s-prow/hook".to_owned(),
                "https://github.com/kubernetes/test-infra".to_owned(),
            )]
            .into(),
            labels: &LABELS,
            evidence: None,
        }
    }

    #[test]
    fn titles() {
        let one = prow(vec![row(
            "gcr.io/k8s-prow/hook",
            "v20240101-aaaaaaa",
            "v20240105-bbbbbbb",
        )]);
        assert_eq!(
            title(&one),
            "autobump(prow): gcr.io/k8s-prow/hook v20240101-aaaaaaa → v20240105-bbbbbbb"
        );
        let same = prow(vec![
            row("gcr.io/k8s-prow/tide", "v1", "v20240105-bbbbbbb"),
            row("gcr.io/k8s-prow/hook", "v1", "v20240105-bbbbbbb"),
        ]);
        assert_eq!(title(&same), "autobump(prow): 2 images → v20240105-bbbbbbb");
        let mixed = prow(vec![
            row(
                "gcr.io/k8s-prow/hook",
                "v20240101-aaaaaaa",
                "v20240105-bbbbbbb",
            ),
            row(
                "gcr.io/k8s-prow/hook",
                "v20240101-aaaaaaa-master",
                "v20240105-bbbbbbb-master",
            ),
        ]);
        assert_eq!(title(&mixed), "autobump(prow): 2 images to 2 versions");
    }

    #[test]
    fn body_is_deterministic_and_links_compares() {
        let a = prow(vec![
            row(
                "gcr.io/k8s-prow/tide",
                "v20240101-aaaaaaa",
                "v20240105-bbbbbbb",
            ),
            row(
                "gcr.io/k8s-prow/hook",
                "v20240101-aaaaaaa",
                "v20240105-bbbbbbb",
            ),
        ]);
        let mut reversed = a.clone();
        reversed.rows.reverse();
        assert_eq!(body(&a), body(&reversed), "row order must not matter");
        let text = body(&a);
        assert!(text.contains(
            "| `gcr.io/k8s-prow/hook` | `v20240101-aaaaaaa` | `v20240105-bbbbbbb` | [compare](https://github.com/kubernetes/test-infra/compare/aaaaaaa...bbbbbbb) |"
        ), "{text}");
        assert!(
            text.contains(
                "| `gcr.io/k8s-prow/tide` | `v20240101-aaaaaaa` | `v20240105-bbbbbbb` |  |"
            ),
            "{text}"
        );
        assert!(text.contains("Labels: skip-review"));
        assert!(has_marker(&text, "prow"));
        assert_eq!(marked_policy(&text), Some("prow"));
        assert_eq!(marked_policy("no marker here"), None);
        assert_eq!(marked_policy("<!-- autobump:policy= -->"), None);
        assert_eq!(
            marked_policy("rolled back\n<!-- autobump:rollback=web -->\n"),
            Some("web")
        );
        assert!(!has_marker(&text, "pro"));
    }

    /// Knative-style digest-only references: the row names the tags of both
    /// digests, so the title does too.
    #[test]
    fn rows_name_the_tags_of_digest_only_references() {
        use crate::core::rewrite::DigestTags;
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let image = "gcr.io/knative-releases/knative.dev/serving/cmd/controller";
        let change = |old: String, new: String, tags: Option<DigestTags>| Change {
            file: "serving-core.yaml".into(),
            line: 1,
            old,
            new,
            digest_tags: tags,
        };
        let changes = [
            change(
                format!("{image}@sha256:{a}"),
                format!("{image}@sha256:{b}"),
                Some(DigestTags {
                    old: "v1.15.1".into(),
                    new: "v1.15.2".into(),
                }),
            ),
            change(
                "gcr.io/k8s-prow/hook:v20240101-aaaaaaa".into(),
                "gcr.io/k8s-prow/hook:v20240105-bbbbbbb".into(),
                None,
            ),
        ];
        let rows = rows(&changes);
        assert_eq!(
            rows,
            [
                row(
                    "gcr.io/k8s-prow/hook",
                    "v20240101-aaaaaaa",
                    "v20240105-bbbbbbb"
                ),
                row(
                    image,
                    &format!("v1.15.1@sha256:{a}"),
                    &format!("v1.15.2@sha256:{b}")
                ),
            ]
        );
        let one = prow(rows[1..].to_vec());
        assert_eq!(
            title(&one),
            format!("autobump(prow): {image} v1.15.1 → v1.15.2")
        );
        assert!(body(&one).contains(&format!(
            "| `{image}` | `v1.15.1@sha256:{a}` | `v1.15.2@sha256:{b}` |"
        )));
    }
}
