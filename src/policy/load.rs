//! Loading policies from files and directories, with every problem reported as
//! `FILE:LINE:COL: field.path: message` (reads files; the checks themselves are pure).
//!
//! A document is checked section by section and list element by list element, so
//! one run reports every broken section of every policy, not just the first. Checks
//! that span fields (exactly one of `prefix`/`name`) and policies (duplicate names,
//! two policies rewriting the same images in the same branch) come after.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::v1alpha1::{self, AutobumpSpec, FreezeSpec, ImagePolicy, NotifySpec, TagPolicy};
use super::values::{DnsLabel, Duration};
use super::yaml::{self, Node, Path, Pos, one_of};
use crate::core::schedule::Window;

/// The `apiVersion`/`kind` pairs this build reads.
pub const SUPPORTED: &[(&str, &str)] = &[(v1alpha1::API_VERSION, v1alpha1::KIND)];

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the offending node.
    pub line: usize,
    /// 1-based column of the offending node.
    pub column: usize,
    /// The field path, e.g. `spec.images[0].tags` (empty for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Where a policy was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// Where `metadata.name` is.
    pub name_pos: Pos,
    /// Where each `spec.images[i]` is.
    pub image_pos: Vec<Pos>,
    /// Where `spec.promotion.from` is.
    pub promotion_pos: Pos,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.name_pos.line)
    }
}

/// `metadata` of a policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The policy's name; unique across all policy files.
    pub name: DnsLabel,
    /// The namespace, in-cluster. Optional in files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<DnsLabel>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A loaded, valid policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Its metadata.
    pub metadata: Metadata,
    /// Its spec.
    pub spec: AutobumpSpec,
    /// Where it came from.
    pub origin: Origin,
}

impl Policy {
    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.metadata.name.as_str()
    }

    /// The policy as a custom resource (no status), e.g. to apply it to a cluster.
    #[must_use]
    pub fn to_resource(&self) -> v1alpha1::Autobump {
        let mut cr = v1alpha1::Autobump::new(self.name(), self.spec.clone());
        cr.metadata.namespace = self.metadata.namespace.as_ref().map(ToString::to_string);
        if !self.metadata.labels.is_empty() {
            cr.metadata.labels = Some(self.metadata.labels.clone());
        }
        if !self.metadata.annotations.is_empty() {
            cr.metadata.annotations = Some(self.metadata.annotations.clone());
        }
        cr
    }

    /// A policy from a custom resource read from the cluster, checked like a file's
    /// (the API server's schema catches less than autobump's own checks). The origin
    /// names the object (`autobumps/NAMESPACE/NAME`). Errors are `path: message`.
    pub fn from_resource(cr: &v1alpha1::Autobump) -> Result<Self, Vec<String>> {
        let name = cr.metadata.name.clone().unwrap_or_default();
        let parse_label = |what: &str, text: &str| {
            text.parse::<DnsLabel>()
                .map_err(|e| vec![format!("metadata.{what}: {e}")])
        };
        let name_label = parse_label("name", &name)?;
        let namespace = match &cr.metadata.namespace {
            Some(ns) => Some(parse_label("namespace", ns)?),
            None => None,
        };
        let problems: Vec<String> = validate_spec(&cr.spec)
            .into_iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            metadata: Metadata {
                name: name_label,
                namespace,
                labels: cr.metadata.labels.clone().unwrap_or_default(),
                annotations: cr.metadata.annotations.clone().unwrap_or_default(),
            },
            spec: cr.spec.clone(),
            origin: Origin {
                file: PathBuf::from(format!(
                    "autobumps/{}/{name}",
                    cr.metadata.namespace.as_deref().unwrap_or("default")
                )),
                name_pos: Pos::default(),
                image_pos: Vec::new(),
                promotion_pos: Pos::default(),
            },
        })
    }
}

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The valid policies, in file order (shared with the [`LoadCache`] that parsed
    /// them: a driver reloading every tick keeps one copy of each).
    pub policies: Vec<Arc<Policy>>,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// Reading the paths failed (as opposed to a policy being invalid).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path given does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A directory held no `*.yaml`/`*.yml` file.
    #[error("{0}: no policy files (*.yaml, *.yml) found")]
    NoPolicyFiles(PathBuf),
    /// A path held policy files, but not a single policy (each file empty, or only
    /// comments and `---`).
    #[error("no policies in {} ({files} file{}, each empty or only comments and `---`)", path.display(), if *files == 1 { "" } else { "s" })]
    NoPolicies {
        /// The path given.
        path: PathBuf,
        /// How many files it held.
        files: usize,
    },
}

impl LoadError {
    /// The variant name, for metrics and logs.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Io { .. } => "io",
            Self::NoPolicyFiles(_) => "no_policy_files",
            Self::NoPolicies { .. } => "no_policies",
        }
    }
}

/// The largest policy file read, in bytes (1 MiB). A policy is a few KiB; a larger
/// file is an error naming it, and no more than this plus one byte is ever read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Loads every policy in `paths` (files, or directories searched recursively for
/// `*.yaml` and `*.yml`, skipping hidden entries), then checks them against each other.
///
/// Only regular files are read, at most [`MAX_FILE_BYTES`] each: a FIFO, device or
/// socket (also behind a symlink), a larger file or one that is not UTF-8 is a
/// problem of that file ([`Loaded::diagnostics`]), like invalid YAML. Each path must
/// hold at least one policy or one problem ([`LoadError::NoPolicies`]).
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    load_paths_cached(paths, &mut LoadCache::default())
}

/// Policy files as last parsed, by path, for [`load_paths_cached`].
#[derive(Debug, Default)]
pub struct LoadCache {
    files: HashMap<PathBuf, Parsed>,
}

/// One file's text (its SHA-256: a driver with 10,000 policies would otherwise keep
/// every file's text) and what it gave.
#[derive(Debug)]
struct Parsed {
    digest: [u8; 32],
    policies: Vec<Arc<Policy>>,
    diagnostics: Vec<Diagnostic>,
}

/// [`load_paths`], parsing only the files whose text changed since `cache` saw them
/// (every file is still read: a file rewritten within the same second as before,
/// which a modification time could miss, is parsed again). A long-running driver
/// reloads every tick; this keeps it from parsing thousands of unchanged files and
/// compiling their globs and expressions each time.
///
/// # Errors
/// As [`load_paths`].
pub fn load_paths_cached(paths: &[PathBuf], cache: &mut LoadCache) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    let mut fresh = HashMap::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound(path.clone()),
            _ => LoadError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut files = Vec::new();
        if meta.is_dir() {
            collect_dir(path, &mut files)?;
            if files.is_empty() {
                return Err(LoadError::NoPolicyFiles(path.clone()));
            }
        } else {
            files.push(path.clone());
        }
        let before = (loaded.policies.len(), loaded.diagnostics.len());
        let count = files.len();
        for file in files {
            match read_policy_file(&file)? {
                Ok(text) => {
                    let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                    let parsed = match cache.files.remove(&file) {
                        Some(parsed) if parsed.digest == digest => parsed,
                        _ => {
                            let (policies, diagnostics) = load_str(&file, &text);
                            // Not `into_iter().map(Arc::new).collect()`: that reuses the
                            // buffer of whole policies (capacity 4 after one push) to hold
                            // pointers, and the cache would keep ~3.7 KiB per file for
                            // the life of the driver.
                            let mut shared = Vec::with_capacity(policies.len());
                            shared.extend(policies.into_iter().map(Arc::new));
                            Parsed {
                                digest,
                                policies: shared,
                                diagnostics,
                            }
                        }
                    };
                    loaded.policies.extend(parsed.policies.iter().cloned());
                    loaded
                        .diagnostics
                        .extend(parsed.diagnostics.iter().cloned());
                    fresh.insert(file.clone(), parsed);
                }
                Err(problem) => loaded.diagnostics.push(problem),
            }
            loaded.files.push(file);
        }
        if (loaded.policies.len(), loaded.diagnostics.len()) == before {
            return Err(LoadError::NoPolicies {
                path: path.clone(),
                files: count,
            });
        }
    }
    // Files gone (or unreadable now) leave the cache.
    cache.files = fresh;
    let cross = cross_check(&loaded.policies);
    let rejected: std::collections::HashSet<usize> = cross.iter().map(|(i, _)| *i).collect();
    loaded.diagnostics.extend(cross.into_iter().map(|(_, d)| d));
    let mut i = 0;
    loaded.policies.retain(|_| {
        i += 1;
        !rejected.contains(&(i - 1))
    });
    Ok(loaded)
}

/// Reads one policy file: its text, or the problem that makes it no policy file (not
/// a regular file, too large, not UTF-8). Errors are I/O failures (the file vanished,
/// permissions, out of file descriptors), which may pass.
fn read_policy_file(file: &FsPath) -> Result<Result<String, Diagnostic>, LoadError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let io = |source| LoadError::Io {
        path: file.to_path_buf(),
        source,
    };
    let problem = |line: usize, column: usize, message: String| Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        path: String::new(),
        message,
    };
    // Non-blocking, so that opening a FIFO returns at once; what was opened is then
    // checked (not the path, which may change in between).
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .map_err(io)?;
    let kind = handle.metadata().map_err(io)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Ok(Err(problem(
            1,
            1,
            format!("{what}, not a regular file: policies are read from regular files only"),
        )));
    }
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Err(problem(
            1,
            1,
            format!("larger than {MAX_FILE_BYTES} bytes, the limit for a policy file"),
        )));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Ok(text)),
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let bad = e.as_bytes()[valid.len()];
            // `valid` is UTF-8 by definition of `valid_up_to`.
            let before = std::str::from_utf8(valid).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Ok(Err(problem(
                line,
                column,
                format!("not UTF-8 text (byte 0x{bad:02x}); policy files must be UTF-8"),
            )))
        }
    }
}

/// What the policy files under `paths` look like on disk (each file's path, size and
/// modification time), to notice a change without reading them; `None` when they
/// cannot be listed (a later load reports why).
#[must_use]
pub fn files_fingerprint(paths: &[PathBuf]) -> Option<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let mut files = Vec::new();
    for path in paths {
        if std::fs::metadata(path).ok()?.is_dir() {
            collect_dir(path, &mut files).ok()?;
        } else {
            files.push(path.clone());
        }
    }
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok()?;
            Some((f, meta.len(), meta.modified().ok()?))
        })
        .collect()
}

fn collect_dir(dir: &FsPath, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type().map_err(io)?.is_dir() {
            collect_dir(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads the policies in one file's text. Returns the valid policies and the problems
/// of the others.
#[must_use]
pub fn load_str(file: &FsPath, text: &str) -> (Vec<Policy>, Vec<Diagnostic>) {
    let diag = |e: &yaml::Error, doc: Option<&Node>| {
        let path = e.path.clone().unwrap_or_default();
        let pos = e
            .pos
            .or_else(|| doc.map(|d| d.locate(&path).pos))
            .unwrap_or(Pos { line: 1, col: 1 });
        Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            path: path.to_string(),
            message: e.message.clone(),
        }
    };
    let docs = match yaml::parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => return (Vec::new(), vec![diag(&e, None)]),
    };
    let mut policies = Vec::new();
    let mut diagnostics = Vec::new();
    for doc in &docs {
        match load_document(doc) {
            Ok((metadata, spec)) => policies.push(Policy {
                origin: Origin {
                    file: file.to_path_buf(),
                    name_pos: doc.locate(&Path::parse("metadata.name")).pos,
                    image_pos: (0..spec.images.len())
                        .map(|i| {
                            doc.locate(&Path::root().key("spec").key("images").index(i))
                                .pos
                        })
                        .collect(),
                    promotion_pos: doc.locate(&Path::parse("spec.promotion.from")).pos,
                },
                metadata,
                spec,
            }),
            Err(errors) => diagnostics.extend(errors.iter().map(|e| diag(e, Some(doc)))),
        }
    }
    (policies, diagnostics)
}

fn err_at(node: &Node, path: Path, message: impl Into<String>) -> yaml::Error {
    yaml::Error::at(node.pos, path, message)
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(a, k)| format!("{a} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_document(doc: &Node) -> Result<(Metadata, AutobumpSpec), Vec<yaml::Error>> {
    let root = Path::root();
    if doc.as_map().is_none() {
        return Err(vec![err_at(
            doc,
            root,
            format!("expected a policy mapping, found {}", doc.kind()),
        )]);
    }
    let field = |name: &str| -> Result<&str, yaml::Error> {
        let node = doc.get(name).ok_or_else(|| {
            err_at(
                doc,
                root.key(name),
                format!("missing field `{name}` (supported: {})", supported_list()),
            )
        })?;
        node.as_str().ok_or_else(|| {
            err_at(
                node,
                root.key(name),
                format!("expected a string, found {}", node.kind()),
            )
        })
    };
    let api_version = field("apiVersion").map_err(|e| vec![e])?;
    let kind = field("kind").map_err(|e| vec![e])?;
    if !SUPPORTED.iter().any(|(a, _)| *a == api_version) {
        return Err(vec![err_at(
            doc.get("apiVersion").unwrap_or(doc),
            root.key("apiVersion"),
            format!(
                "unsupported apiVersion \"{api_version}\" (supported: {})",
                supported_list()
            ),
        )]);
    }
    if !SUPPORTED
        .iter()
        .any(|(a, k)| *a == api_version && *k == kind)
    {
        return Err(vec![err_at(
            doc.get("kind").unwrap_or(doc),
            root.key("kind"),
            format!(
                "unsupported kind \"{kind}\" for {api_version} (supported: {})",
                supported_list()
            ),
        )]);
    }
    // Only v1alpha1 exists; a new version adds a module and a branch here.
    load_v1alpha1(doc)
}

fn load_v1alpha1(doc: &Node) -> Result<(Metadata, AutobumpSpec), Vec<yaml::Error>> {
    let root = Path::root();
    let mut errors = Vec::new();
    for (key, _) in doc.as_map().unwrap_or_default() {
        match key.as_str() {
            Some("apiVersion" | "kind" | "metadata" | "spec") => {}
            Some("status") => errors.push(err_at(
                key,
                root.key("status"),
                "status is written by autobump, not by policy files; remove it",
            )),
            other => errors.push(err_at(
                key,
                root.key(other.unwrap_or_default()),
                format!(
                    "unknown field `{}`, expected {}",
                    other.unwrap_or_default(),
                    one_of(&["apiVersion", "kind", "metadata", "spec"])
                ),
            )),
        }
    }
    let metadata = match doc.get("metadata") {
        None => {
            errors.push(err_at(
                doc,
                root.key("metadata"),
                "missing field `metadata`",
            ));
            None
        }
        Some(node) => yaml::from_node::<Metadata>(node, &root.key("metadata"))
            .map_err(|e| errors.push(e))
            .ok(),
    };
    let spec_path = root.key("spec");
    let spec = match doc.get("spec") {
        None => {
            errors.push(err_at(doc, spec_path.clone(), "missing field `spec`"));
            None
        }
        Some(node) => {
            let section_errors = check_sections(node, &spec_path);
            if section_errors.is_empty() {
                yaml::from_node::<AutobumpSpec>(node, &spec_path)
                    .map_err(|e| errors.push(e))
                    .ok()
            } else {
                errors.extend(section_errors);
                None
            }
        }
    };
    if let Some(spec) = &spec {
        let spec_node = doc.get("spec").unwrap_or(doc);
        for (path, message) in validate_spec(spec) {
            let full = spec_path.clone().join(&path);
            errors.push(err_at(spec_node.locate(&path), full, message));
        }
    }
    match (metadata, spec) {
        (Some(m), Some(s)) if errors.is_empty() => Ok((m, s)),
        _ => Err(errors),
    }
}

/// The fields of `spec`, each checked on its own so every broken section is reported.
const SPEC_FIELDS: &[&str] = &[
    "images",
    "source",
    "pullRequest",
    "directPush",
    "schedule",
    "merge",
    "gate",
    "rollout",
    "rollback",
    "notify",
    "promotion",
];

fn check_sections(spec: &Node, path: &Path) -> Vec<yaml::Error> {
    let Some(entries) = spec.as_map() else {
        if spec.is_null() {
            return vec![err_at(spec, path.clone(), "missing field `images`")];
        }
        return vec![err_at(
            spec,
            path.clone(),
            format!("expected a mapping, found {}", spec.kind()),
        )];
    };
    let mut errors = Vec::new();
    for required in ["images", "source"] {
        if spec.get(required).is_none() {
            errors.push(err_at(
                spec,
                path.clone(),
                format!("missing field `{required}`"),
            ));
        }
    }
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default();
        let p = path.key(name);
        let r = match name {
            "images" => check_list::<ImagePolicy>(value, &p),
            "source" => check::<v1alpha1::SourceSpec>(value, &p),
            "pullRequest" => check::<Option<v1alpha1::PullRequestSpec>>(value, &p),
            "directPush" => check::<Option<v1alpha1::DirectPushSpec>>(value, &p),
            "schedule" => check_schedule(value, &p),
            "merge" => check::<v1alpha1::MergeSpec>(value, &p),
            "gate" => check::<Option<v1alpha1::GateSpec>>(value, &p),
            "rollout" => check::<Option<v1alpha1::RolloutSpec>>(value, &p),
            "rollback" => check::<v1alpha1::RollbackSpec>(value, &p),
            "notify" => check_list::<NotifySpec>(value, &p),
            "promotion" => check::<Option<v1alpha1::PromotionSpec>>(value, &p),
            _ => vec![err_at(
                key,
                p,
                format!("unknown field `{name}`, expected {}", one_of(SPEC_FIELDS)),
            )],
        };
        errors.extend(r);
    }
    errors
}

fn check<'a, T: Deserialize<'a>>(node: &'a Node, path: &Path) -> Vec<yaml::Error> {
    yaml::from_node::<T>(node, path).err().into_iter().collect()
}

fn check_list<'a, T: Deserialize<'a>>(node: &'a Node, path: &Path) -> Vec<yaml::Error> {
    match &node.value {
        yaml::Value::Seq(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| check::<T>(item, &path.index(i)))
            .collect(),
        _ => check::<Vec<T>>(node, path),
    }
}

/// `schedule` is checked field by field: a list of windows often has several typos.
fn check_schedule(node: &Node, path: &Path) -> Vec<yaml::Error> {
    let Some(entries) = node.as_map() else {
        return check::<v1alpha1::ScheduleSpec>(node, path);
    };
    let mut errors = Vec::new();
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default();
        let p = path.key(name);
        errors.extend(match name {
            "timezone" => check::<super::values::Timezone>(value, &p),
            "windows" => check_list::<Window>(value, &p),
            "minInterval" => check::<Duration>(value, &p),
            "freezes" => check_list::<FreezeSpec>(value, &p),
            _ => vec![err_at(
                key,
                p,
                format!(
                    "unknown field `{name}`, expected {}",
                    one_of(&["timezone", "windows", "minInterval", "freezes"])
                ),
            )],
        });
    }
    errors
}

/// Checks that span fields of one spec. Paths are relative to `spec`.
fn validate_spec(spec: &AutobumpSpec) -> Vec<(Path, String)> {
    let mut out = validate_images(&spec.images);
    validate_delivery_and_schedule(spec, &mut out);
    validate_gate_and_rollback(spec, &mut out);
    out
}

fn validate_images(images_spec: &[ImagePolicy]) -> Vec<(Path, String)> {
    let mut out = Vec::new();
    let images = Path::root().key("images");
    let mut earlier = ImageIndex::default();
    if images_spec.is_empty() {
        out.push((images.clone(), "at least one image is required".into()));
    }
    for (i, image) in images_spec.iter().enumerate() {
        let p = images.index(i);
        match (&image.prefix, &image.name) {
            (Some(_), Some(_)) => out.push((
                p.key("name"),
                "give either `prefix` (every image under it) or `name` (one image), not both".into(),
            )),
            (None, None) => out.push((
                p.clone(),
                "missing `prefix` (every image under it) or `name` (one image)".into(),
            )),
            (None, Some(_)) if image.consistent => out.push((
                p.key("consistent"),
                "`consistent` moves every image under a `prefix` to one tag; it needs `prefix`, not `name`".into(),
            )),
            _ => {}
        }
        if let TagPolicy::Regex(re) = &image.tags
            && let Some(group) = &re.extract
            && !re
                .pattern
                .regex()
                .capture_names()
                .flatten()
                .any(|n| n == group)
        {
            out.push((
                p.key("tags").key("regex").key("extract"),
                format!(
                    "the pattern has no capture group named \"{group}\" (write `(?P<{group}>...)`)"
                ),
            ));
        }
        if let Some(j) = earlier.find(image) {
            out.push((
                p.clone(),
                format!("{} is already covered by spec.images[{j}]", describe(image)),
            ));
        }
        earlier.add(image, i);
    }
    out
}

fn validate_delivery_and_schedule(spec: &AutobumpSpec, out: &mut Vec<(Path, String)>) {
    let root = Path::root();
    if spec.pull_request.is_some() && spec.direct_push.is_some() {
        out.push((
            root.key("directPush"),
            "`pullRequest` and `directPush` are mutually exclusive".into(),
        ));
    }
    if spec.source.include.is_empty() {
        out.push((
            root.key("source").key("include"),
            "at least one glob is required (omit the field for the default **/*.yaml, **/*.yml)"
                .into(),
        ));
    }
    if let Some(forge) = spec.source.forge
        && let Err(why) =
            crate::forge::RepoName::locate(spec.source.repo.as_str(), Some(forge), None)
    {
        out.push((root.key("source").key("forge"), why));
    }
    let schedule = root.key("schedule");
    if spec.schedule.min_interval.is_zero() {
        out.push((
            schedule.key("minInterval"),
            "must be longer than 0s (it bounds how often production changes)".into(),
        ));
    }
    let built = spec.schedule.to_schedule();
    for (i, (freeze, f)) in spec
        .schedule
        .freezes
        .iter()
        .zip(built.freezes())
        .enumerate()
    {
        if let Err(why) = f.validate_in(built.timezone()) {
            out.push((schedule.key("freezes").index(i).key("to"), why));
        }
        if freeze.reason.trim().is_empty() {
            out.push((
                schedule.key("freezes").index(i).key("reason"),
                "say why (it is shown to whoever wonders why nothing deploys)".into(),
            ));
        }
    }
}

fn validate_gate_and_rollback(spec: &AutobumpSpec, out: &mut Vec<(Path, String)>) {
    let root = Path::root();
    if let Some(gate) = &spec.gate {
        let g = root.key("gate");
        match (&gate.prometheus, &gate.alertmanager) {
            (Some(_), Some(_)) => out.push((
                g.key("alertmanager"),
                "give either `prometheus` or `alertmanager`, not both".into(),
            )),
            (None, None) => out.push((
                g.clone(),
                "missing `prometheus` or `alertmanager` (where to read firing alerts)".into(),
            )),
            _ => {}
        }
        if gate.bake.is_zero() {
            out.push((
                g.key("bake"),
                "must be longer than 0s (a version must stay quiet for a while to be known-good)"
                    .into(),
            ));
        }
    }
    let has_workloads = spec
        .rollout
        .as_ref()
        .is_some_and(|r| !r.workloads.is_empty());
    if spec.rollback.patch_cluster && !has_workloads {
        out.push((
            root.key("rollback").key("patchCluster"),
            "needs `rollout.workloads` (which workloads to patch)".into(),
        ));
    }
    if let Some(retest) = &spec.merge.retest
        && retest.comment.trim().is_empty()
    {
        out.push((
            root.key("merge").key("retest").key("comment"),
            "must not be empty".into(),
        ));
    }
}

/// How an image entry is named in messages.
fn describe(image: &ImagePolicy) -> String {
    match (&image.prefix, &image.name) {
        (Some(prefix), _) => format!("image prefix \"{prefix}\""),
        (None, Some(name)) => format!("image \"{name}\""),
        (None, None) => "an image entry with neither prefix nor name".to_owned(),
    }
}

/// Image entries seen so far, each with an owner (its index, or its policy's), to
/// find in logarithmic time an earlier entry that selects an image in common with a
/// new one: a prefix covers every repository (and prefix) that starts with it, a
/// name covers only itself. Keeps checks over many images linear.
struct ImageIndex<T> {
    /// Every prefix and name, with the first owner that gave it.
    all: BTreeMap<String, T>,
    /// The prefixes only.
    prefixes: HashMap<String, T>,
    /// The lengths of the prefixes (at most 255: the longest repository name).
    prefix_lens: std::collections::BTreeSet<usize>,
}

impl<T> Default for ImageIndex<T> {
    fn default() -> Self {
        Self {
            all: BTreeMap::new(),
            prefixes: HashMap::new(),
            prefix_lens: std::collections::BTreeSet::new(),
        }
    }
}

impl<T: Copy + Ord> ImageIndex<T> {
    fn key(image: &ImagePolicy) -> Option<(&str, bool)> {
        match (&image.prefix, &image.name) {
            (Some(prefix), _) => Some((prefix.as_str(), true)),
            (None, Some(name)) => Some((name.as_str(), false)),
            (None, None) => None,
        }
    }

    /// The owner of an earlier entry that overlaps `image`: the smallest among the
    /// prefixes that cover it and, for a prefix, the entry it covers that comes
    /// first in name order (an index kept cheap rather than the very first owner).
    fn find(&self, image: &ImagePolicy) -> Option<T> {
        let (text, is_prefix) = Self::key(image)?;
        // An earlier prefix that this entry starts with.
        let covering = self
            .prefix_lens
            .range(..=text.len())
            .filter(|&&n| text.is_char_boundary(n))
            .filter_map(|&n| self.prefixes.get(&text[..n]).copied());
        // An earlier entry this prefix covers (or, for a name, the same name).
        let covered = if is_prefix {
            self.all
                .range::<str, _>((std::ops::Bound::Included(text), std::ops::Bound::Unbounded))
                .next()
                .filter(|(k, _)| k.starts_with(text))
                .map(|(_, owner)| *owner)
        } else {
            self.all.get(text).copied()
        };
        covering.chain(covered).min()
    }

    fn add(&mut self, image: &ImagePolicy, owner: T) {
        let Some((text, is_prefix)) = Self::key(image) else {
            return;
        };
        self.all.entry(text.to_owned()).or_insert(owner);
        if is_prefix {
            self.prefixes.entry(text.to_owned()).or_insert(owner);
            self.prefix_lens.insert(text.len());
        }
    }
}

/// Checks between policies: unique names, and no two policies rewriting the same
/// images in the same repository and branch (they would fight over every bump).
/// Returns the index of the rejected (later) policy with each diagnostic.
fn cross_check(policies: &[Arc<Policy>]) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    let mut names: HashMap<(Option<&str>, &str), &Policy> = HashMap::new();
    // The images of the policies so far, per repository and branch.
    let mut by_target: HashMap<(String, &str), ImageIndex<usize>> = HashMap::new();
    for (i, p) in policies.iter().enumerate() {
        let key = (
            p.metadata.namespace.as_ref().map(DnsLabel::as_str),
            p.name(),
        );
        if let Some(first) = names.get(&key) {
            out.push((
                i,
                Diagnostic {
                    file: p.origin.file.clone(),
                    line: p.origin.name_pos.line,
                    column: p.origin.name_pos.col,
                    path: "metadata.name".into(),
                    message: format!(
                        "duplicate policy name \"{}\" (first defined at {})",
                        p.name(),
                        first.origin
                    ),
                },
            ));
            continue;
        }
        names.insert(key, p);
        let group = by_target
            .entry((p.spec.source.repo.identity(), p.spec.source.branch.as_str()))
            .or_default();
        for (j, image) in p.spec.images.iter().enumerate() {
            if let Some(e) = group.find(image) {
                let earlier = &policies[e];
                // Environments of one promotion chain often live in one repository,
                // each in its own files: they may share images there.
                if same_chain(policies, p, earlier)
                    && p.spec.source.include != earlier.spec.source.include
                {
                    continue;
                }
                let pos = p.origin.image_pos[j];
                out.push((
                    i,
                    Diagnostic {
                        file: p.origin.file.clone(),
                        line: pos.line,
                        column: pos.col,
                        path: format!("spec.images[{j}]"),
                        message: format!(
                            "{} is also rewritten by policy \"{}\" ({}) in the same repository and branch",
                            describe(image),
                            earlier.name(),
                            earlier.origin
                        ),
                    },
                ));
                break;
            }
        }
        for image in &p.spec.images {
            group.add(image, i);
        }
    }
    let rejected: HashSet<usize> = out.iter().map(|(i, _)| *i).collect();
    out.extend(promotion_check(policies, &rejected));
    out
}

/// The policy named `name` in `p`'s namespace among `policies`, but `skip`.
fn upstream_of<'a>(
    policies: &'a [Arc<Policy>],
    p: &Policy,
    skip: &HashSet<usize>,
) -> Option<(usize, &'a Policy)> {
    let from = p.spec.promotion.as_ref()?.from.as_str();
    policies
        .iter()
        .enumerate()
        .find(|(i, q)| {
            !skip.contains(i) && q.name() == from && q.metadata.namespace == p.metadata.namespace
        })
        .map(|(i, q)| (i, q.as_ref()))
}

/// Whether `a` and `b` are in one promotion chain (one reaches the other upstream).
fn same_chain(policies: &[Arc<Policy>], a: &Policy, b: &Policy) -> bool {
    let reaches = |from: &Policy, to: &Policy| {
        let mut at = from;
        for _ in 0..policies.len() {
            match upstream_of(policies, at, &HashSet::new()) {
                Some((_, up)) if std::ptr::eq(up, to) => return true,
                Some((_, up)) => at = up,
                None => return false,
            }
        }
        false
    };
    reaches(a, b) || reaches(b, a)
}

/// `promotion.from` names a policy that exists (not rejected otherwise), not the
/// policy itself, and the chain it starts has no cycle.
fn promotion_check(
    policies: &[Arc<Policy>],
    rejected: &HashSet<usize>,
) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let Some(promotion) = &p.spec.promotion else {
            continue;
        };
        if rejected.contains(&i) {
            continue;
        }
        let at = |message: String| Diagnostic {
            file: p.origin.file.clone(),
            line: p.origin.promotion_pos.line,
            column: p.origin.promotion_pos.col,
            path: "spec.promotion.from".into(),
            message,
        };
        let Some((mut j, _)) = upstream_of(policies, p, rejected) else {
            let names: Vec<&str> = policies
                .iter()
                .enumerate()
                .filter(|(k, q)| {
                    *k != i && !rejected.contains(k) && q.metadata.namespace == p.metadata.namespace
                })
                .map(|(_, q)| q.name())
                .collect();
            out.push((
                i,
                at(format!(
                    "unknown policy \"{}\" (policies here: {})",
                    promotion.from,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )),
            ));
            continue;
        };
        // Follow the chain: reaching `p` again is a cycle.
        let mut chain = vec![p.name()];
        let mut seen = HashSet::from([i]);
        loop {
            chain.push(policies[j].name());
            if j == i {
                out.push((
                    i,
                    at(format!(
                        "promotion cycle: {} (a chain of environments must start somewhere)",
                        chain.join(" <- ")
                    )),
                ));
                break;
            }
            if !seen.insert(j) {
                // A cycle further up, reported at its own members.
                break;
            }
            match upstream_of(policies, &policies[j], rejected) {
                Some((k, _)) => j = k,
                None => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running driver keeps every parsed policy for its whole life, so what it
    /// keeps is sized to what the files hold: the cache's list of a one-policy file
    /// has room for one policy (not the four a first `push` reserves, which an
    /// in-place `collect` into `Arc`s would keep), and a one-image list one image.
    #[test]
    fn the_cache_keeps_no_spare_capacity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: a}\nspec:\n  images:\n    - name: registry.example/app\n      tags: {semver: {}}\n  source:\n    repo: https://github.com/acme/infra.git\n    include: [apps/a.yaml]\n  directPush: {}\n",
        )
        .unwrap();
        let mut cache = LoadCache::default();
        let loaded = load_paths_cached(&[dir.path().to_owned()], &mut cache).unwrap();
        let parsed = cache.files.values().next().unwrap();
        assert_eq!(parsed.policies.capacity(), 1);
        let spec = &loaded.policies[0].spec;
        assert_eq!(spec.images.capacity(), 1);
        assert_eq!(spec.source.include.capacity(), 1);
    }
}
