//! Debian's `prometheus` and `prometheus-alertmanager` as test servers.

use std::fmt::Write as _;

use serde_json::Value;

use super::process::{ServerProcess, ServerSpec, arg, find_binary};

/// How a Prometheus test server is configured. Scrape and rule evaluation run every
/// second; note that Prometheus scrapes a new target only ~5 s after it starts.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    rules_yaml: String,
    scrape_targets: Vec<String>,
    alertmanagers: Vec<String>,
    resend_delay: &'static str,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            rules_yaml: "groups: []\n".to_owned(),
            scrape_targets: Vec::new(),
            alertmanagers: Vec::new(),
            resend_delay: "1s",
        }
    }
}

impl PrometheusOptions {
    /// The whole rule file (`groups: [...]`).
    #[must_use]
    pub fn rules(mut self, rules_yaml: &str) -> Self {
        rules_yaml.clone_into(&mut self.rules_yaml);
        self
    }

    /// Scrape `host` (`127.0.0.1:PORT`, path `/metrics`) every second, as job `test`.
    #[must_use]
    pub fn scrape(mut self, host: &str) -> Self {
        self.scrape_targets.push(host.to_owned());
        self
    }

    /// Send alerts to an Alertmanager (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`).
    #[must_use]
    pub fn alertmanager(mut self, url_or_host: &str) -> Self {
        let host = url_or_host
            .trim_start_matches("http://")
            .trim_end_matches('/');
        self.alertmanagers.push(host.to_owned());
        self
    }

    /// `--rules.alert.resend-delay` (default here: `1s`; Prometheus's own is `1m`). It
    /// also sets how soon Alertmanager resolves an alert Prometheus stops sending.
    #[must_use]
    pub fn resend_delay(mut self, delay: &'static str) -> Self {
        self.resend_delay = delay;
        self
    }

    pub async fn start(self) -> Prometheus {
        Prometheus::start_with(self).await
    }
}

/// A running `prometheus`; killed when dropped.
pub struct Prometheus {
    process: ServerProcess,
    client: reqwest::Client,
}

impl Prometheus {
    /// Prometheus with the rule file `rules_yaml` (`groups: [...]`), scraping every
    /// target (`127.0.0.1:PORT`) as job `test`, sending alerts to `alertmanager` if given.
    pub async fn start(
        rules_yaml: &str,
        scrape_targets: &[&str],
        alertmanager: Option<&str>,
    ) -> Self {
        let mut options = PrometheusOptions::default().rules(rules_yaml);
        for target in scrape_targets {
            options = options.scrape(target);
        }
        if let Some(am) = alertmanager {
            options = options.alertmanager(am);
        }
        options.start().await
    }

    #[must_use]
    pub fn options() -> PrometheusOptions {
        PrometheusOptions::default()
    }

    pub async fn start_with(options: PrometheusOptions) -> Self {
        let spec = ServerSpec {
            name: "prometheus",
            binary: find_binary("prometheus", "prometheus"),
            ready_path: "/-/ready",
            ready_statuses: &[200],
        };
        let process = ServerProcess::start(&spec, |dir, port| {
            let rules = dir.join("rules.yml");
            std::fs::write(&rules, &options.rules_yaml).expect("writing the rule file");
            let mut config = format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: {}\n",
                rules.display(),
                yaml_list(&options.scrape_targets),
            );
            if !options.alertmanagers.is_empty() {
                write!(
                    config,
                    "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: {}\n",
                    yaml_list(&options.alertmanagers)
                )
                .expect("writing to a String");
            }
            let path = dir.join("prometheus.yml");
            std::fs::write(&path, config).expect("writing the Prometheus config");
            vec![
                arg(format!("--config.file={}", path.display())),
                arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                )),
                arg(format!("--web.listen-address=127.0.0.1:{port}")),
                // Otherwise alert links (generatorURL) name the machine's hostname.
                arg(format!("--web.external-url=http://127.0.0.1:{port}/")),
                arg(format!(
                    "--rules.alert.resend-delay={}",
                    options.resend_delay
                )),
            ]
        })
        .await;
        Self {
            process,
            client: super::http_client(),
        }
    }

    /// `http://127.0.0.1:PORT`
    #[must_use]
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// `127.0.0.1:PORT`
    #[must_use]
    pub fn host(&self) -> String {
        self.process.host()
    }

    #[must_use]
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// `GET /api/v1/alerts`: the active (pending or firing) alerts.
    pub async fn alerts(&self) -> Vec<Value> {
        let body = api_get(&self.client, &format!("{}/api/v1/alerts", self.url())).await;
        assert_eq!(body["status"], "success", "/api/v1/alerts: {body}");
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// An instant query (`/api/v1/query`); returns `data.result`.
    pub async fn query(&self, promql: &str) -> Value {
        let url = url::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            [("query", promql)],
        )
        .expect("query URL");
        let body = api_get(&self.client, url.as_str()).await;
        assert_eq!(body["status"], "success", "query {promql:?}: {body}");
        body["data"]["result"].clone()
    }
}

/// What Alertmanager is configured with.
#[derive(Debug, Clone, Default)]
pub struct AlertmanagerConfig {
    webhook_url: Option<String>,
    raw_yaml: Option<String>,
}

impl AlertmanagerConfig {
    /// The default route (`group_wait: 0s`, `group_interval: 1s`, `repeat_interval: 1h`)
    /// to a receiver that posts webhooks (`send_resolved: true`) to `url`.
    #[must_use]
    pub fn webhook(url: &str) -> Self {
        Self {
            webhook_url: Some(url.to_owned()),
            raw_yaml: None,
        }
    }

    /// A whole config file of the test's own.
    #[must_use]
    pub fn raw(yaml: &str) -> Self {
        Self {
            webhook_url: None,
            raw_yaml: Some(yaml.to_owned()),
        }
    }

    /// The YAML this config stands for.
    #[must_use]
    pub fn render(&self) -> String {
        if let Some(raw) = &self.raw_yaml {
            return raw.clone();
        }
        let mut yaml = String::from(
            "route:\n  receiver: default\n  group_by: ['alertname']\n  \
             group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: default\n",
        );
        if let Some(url) = &self.webhook_url {
            write!(
                yaml,
                "    webhook_configs:\n      - url: {url}\n        send_resolved: true\n"
            )
            .expect("writing to a String");
        }
        yaml
    }
}

/// A running `prometheus-alertmanager` (clustering off); killed when dropped.
pub struct Alertmanager {
    process: ServerProcess,
    client: reqwest::Client,
}

impl Alertmanager {
    /// `Alertmanager::start(AlertmanagerConfig::default())` has a receiver that does
    /// nothing; `AlertmanagerConfig::webhook(url)` one that posts to `url`.
    pub async fn start(config: AlertmanagerConfig) -> Self {
        let spec = ServerSpec {
            name: "prometheus-alertmanager",
            binary: find_binary("prometheus-alertmanager", "prometheus-alertmanager"),
            ready_path: "/-/ready",
            ready_statuses: &[200],
        };
        let yaml = config.render();
        let process = ServerProcess::start(&spec, |dir, port| {
            let path = dir.join("alertmanager.yml");
            std::fs::write(&path, &yaml).expect("writing the Alertmanager config");
            vec![
                arg(format!("--config.file={}", path.display())),
                arg(format!("--storage.path={}", dir.join("data").display())),
                arg(format!("--web.listen-address=127.0.0.1:{port}")),
                arg(format!("--web.external-url=http://127.0.0.1:{port}/")),
                // Empty: no cluster listener (it would bind 0.0.0.0:9094).
                arg("--cluster.listen-address="),
            ]
        })
        .await;
        Self {
            process,
            client: super::http_client(),
        }
    }

    /// `http://127.0.0.1:PORT`
    #[must_use]
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// `127.0.0.1:PORT`
    #[must_use]
    pub fn host(&self) -> String {
        self.process.host()
    }

    #[must_use]
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds (each with `labels`,
    /// `status.state`, `startsAt`, …).
    pub async fn alerts(&self) -> Vec<Value> {
        let body = api_get(&self.client, &format!("{}/api/v2/alerts", self.url())).await;
        body.as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/api/v2/alerts is not a list: {body}"))
    }
}

async fn api_get(client: &reqwest::Client, url: &str) -> Value {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {url} answered {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
}

/// `['a', 'b']` (YAML flow sequence of single-quoted strings).
fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!("[{}]", quoted.join(", "))
}
