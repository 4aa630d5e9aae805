//! Command-line surface (clap derive).

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A batteries-included container service (Marathon-compatible)",
    after_help = "Examples:\n  wharf agent --data-dir /var/lib/wharf\n  WHARF_ADDR=http://10.0.0.5:8080 wharf app ls\n  wharf app deploy web.json"
)]
pub struct Cli {
    /// Address of any Wharf node's HTTP API.
    /// Address of any Wharf node's HTTP API. HTTP Basic credentials can go
    /// in it: `http://user:pass@host:8080`.
    #[arg(long, global = true, env = "WHARF_ADDR", default_value = "http://127.0.0.1:8080")]
    pub addr: String,
    /// An API token (from `wharf token create`), sent as a bearer token.
    #[arg(long, global = true, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for an `https://` address (e.g. the
    /// node's own self-signed --https-cert).
    #[arg(long, global = true, env = "WHARF_CACERT")]
    pub cacert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Start a node (every component: state, scheduler, agent, API).
    #[command(
        after_help = "Examples:\n  wharf agent --data-dir /var/lib/wharf\n  wharf agent --http 10.0.0.6:8080 --rpc 10.0.0.6:5050 --join 10.0.0.5:5050"
    )]
    Agent(AgentArgs),
    /// A cluster of N nodes on this machine, each on its own loopback address.
    #[command(
        subcommand,
        after_help = "Examples:\n  wharf cluster up --nodes 3\n  WHARF_ADDR=http://127.0.1.2:8080 wharf app deploy web.json\n  wharf cluster status\n  wharf cluster down --purge"
    )]
    Cluster(ClusterCommand),
    /// The logs demo (examples/logs-demo): a log shipper, an indexer, a
    /// PostgreSQL store with full-text search, a web viewer behind the HTTP
    /// front and Prometheus, built on this host from Debian packages.
    #[command(
        subcommand,
        after_help = "Examples:\n  wharf demo up                       (the nodes of `wharf cluster up`, or .wharf)\n  WHARF_ADDR=http://127.0.1.1:8080 wharf demo up --data-dir .wharf-cluster/node-1\n  wharf demo down"
    )]
    Demo(DemoCommand),
    /// Make this host a node run by systemd: writes /etc/wharf/wharf.toml
    /// (the agent flags given here) and /etc/systemd/system/wharf.service,
    /// enables and starts it.
    #[command(
        after_help = "Examples:\n  wharf install                                   (the first node)\n  wharf install --join 10.0.0.5:5050 --token WHARF-1-...   (the others)\n  wharf install --root /mnt/image --http 10.0.0.6:8080   (only write the files under a root)\n\nHosts without systemd get the `wharf agent` command line to run instead (exit code 1)."
    )]
    Install(InstallArgs),
    /// Stop and remove the service `wharf install` made, ending its tasks
    /// (--purge: also its config and data).
    #[command(after_help = "Examples:\n  wharf uninstall\n  wharf uninstall --purge")]
    Uninstall {
        /// Also remove /etc/wharf and the node's data dir.
        #[arg(long)]
        purge: bool,
        /// Remove the files under DIR instead of / (and run no systemctl).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Internal: the per-task supervisor started by the agent.
    #[command(hide = true)]
    Executor {
        #[arg(long)]
        sandbox: PathBuf,
    },
    /// Manage apps (long-running services).
    #[command(
        subcommand,
        after_help = "Examples:\n  wharf app deploy web.json\n  wharf app ls\n  wharf app show /web"
    )]
    App(AppCommand),
    /// Manage jobs (one-off and scheduled runs, Metronome's API).
    #[command(subcommand)]
    Job(crate::cli_job::JobCommand),
    /// List tasks with their state, health, node and ports.
    #[command(after_help = "Examples:\n  wharf ps\n  wharf ps --app /web\n  wharf ps --json | jq '.tasks[].host'")]
    Ps {
        /// Only tasks of this app.
        #[arg(long)]
        app: Option<String>,
        /// Print `/v2/tasks` as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's stdout (or stderr), or every task's of an app.
    #[command(
        after_help = "Examples:\n  wharf logs -f TASK_ID\n  wharf logs --tail 100 --stderr TASK_ID\n  wharf logs -f --app /web   (each line prefixed with its task's instance)"
    )]
    Logs {
        #[arg(required_unless_present = "app")]
        task_id: Option<String>,
        /// Every task of this app, each line prefixed with its instance.
        #[arg(long, conflicts_with = "task_id")]
        app: Option<String>,
        /// Keep printing new output until the task ends (with --app: new
        /// tasks' output too, until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// The task's stderr instead of its stdout.
        #[arg(long)]
        stderr: bool,
        /// Start with the last N lines instead of everything kept.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Deployments in flight: list, or roll one back.
    #[command(subcommand, after_help = "Examples:\n  wharf deployment ls\n  wharf deployment rm ID")]
    Deployment(DeploymentCommand),
    /// Cluster nodes.
    #[command(subcommand, after_help = "Examples:\n  wharf node ls\n  wharf node drain 3")]
    Node(NodeCommand),
    /// HTTP API tokens (admin only; the first token turns authentication
    /// on for the whole cluster) and the cluster's join token.
    #[command(
        subcommand,
        after_help = "Examples:\n  wharf token create --role viewer --name grafana\n  wharf token ls\n  wharf token show\n  wharf token rotate"
    )]
    Token(TokenCommand),
    /// The cluster's secret store (writes need an admin, listing a
    /// deployer). Apps reference secrets by path; values are never shown.
    #[command(
        subcommand,
        after_help = "Examples:\n  printf %s \"$PW\" | wharf secret put prod/db-password\n  wharf secret put tls/key --file key.pem\n  wharf secret ls"
    )]
    Secret(SecretCommand),
    /// Unlock a node started with --autolock after a restart (admin), with
    /// the unlock key it printed; read from stdin when not given.
    #[command(after_help = "Example:\n  WHARF_ADDR=http://10.0.0.2:8080 wharf unlock WHARFKEY-1-...")]
    Unlock { key: Option<String> },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  wharf completion bash > /etc/bash_completion.d/wharf\n  wharf completion zsh > \"${fpath[1]}/_wharf\"\n  wharf completion fish > ~/.config/fish/completions/wharf.fish"
    )]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Benchmarks against a node this command starts itself.
    #[command(subcommand, after_help = "Examples:\n  wharf bench launch\n  wharf bench logs --lines 1000000")]
    Bench(BenchCommand),
    /// The built-in runtime's images of a node on this host (its --data-dir).
    ///
    /// Examples: `wharf image pull 127.0.0.1:5000/web:1`, `wharf image import web.tar`
    /// (from `docker save`), `wharf image ls`, `wharf image rm web:1`.
    Image(crate::image_cmd::ImageArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Write the files under DIR instead of / and start nothing (an image
    /// being prepared, or a look at what would be written).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The wharf binary the unit runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum DemoCommand {
    /// Build the image if this host has not, import it into the nodes'
    /// stores here, deploy the /demo group and wait until every service is
    /// healthy and the search answers through the HTTP front.
    Up {
        /// A node's data dir on this host to import the image into
        /// (repeatable; default: the nodes of .wharf-cluster, else .wharf).
        #[arg(long)]
        data_dir: Vec<PathBuf>,
        /// The HTTP front's URL (default: port 80 of the --addr host).
        #[arg(long)]
        front: Option<String>,
        /// The example's folder (default: examples/logs-demo here, else the
        /// one of the source tree this binary was built from).
        #[arg(long)]
        example: Option<PathBuf>,
    },
    /// Delete the /demo group and wait until its tasks are gone.
    Down {
        #[arg(long)]
        example: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes in the background on 127.0.1.1, .2, ... (every listener
    /// on its node's address), the others joining the first, and wait until
    /// all have joined. Arguments after `--` go to every `wharf agent`.
    #[command(
        after_help = "Examples:\n  wharf cluster up --nodes 3\n  wharf cluster up --nodes 5 --dir /tmp/c5 --base 127.0.2.1 -- --voters 5"
    )]
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where the nodes' data and logs go (`node-N`, `node-N.log`).
        #[arg(long, default_value = ".wharf-cluster")]
        dir: PathBuf,
        /// The first node's loopback address; node N has the Nth from it.
        #[arg(long, default_value = "127.0.1.1")]
        base: std::net::Ipv4Addr,
        /// Seconds to wait for every node to join.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// `wharf agent` flags for every node.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// The nodes of the cluster in DIR: process, role, status, tasks.
    #[command(after_help = "Example:\n  wharf cluster status --dir .wharf-cluster")]
    Status {
        #[arg(long, default_value = ".wharf-cluster")]
        dir: PathBuf,
    },
    /// Stop the nodes and their tasks (executors, containers, cgroups).
    #[command(after_help = "Examples:\n  wharf cluster down\n  wharf cluster down --purge   (also delete the data)")]
    Down {
        #[arg(long, default_value = ".wharf-cluster")]
        dir: PathBuf,
        /// Also delete DIR: the nodes' state, sandboxes, images and logs.
        #[arg(long)]
        purge: bool,
    },
}

/// Every agent flag can also come from a `WHARF_*` variable and from the
/// file of `--config` (see `agent_config`). The matches are kept for the
/// commands that need to know which flags were given (`install`).
pub fn parse() -> (Cli, ArgMatches) {
    let cmd = crate::agent_config::with_env(Cli::command());
    let matches = cmd.clone().get_matches();
    let config = match matches.subcommand() {
        Some((crate::agent_config::AGENT, sub)) => sub.get_one::<PathBuf>("config").cloned(),
        _ => None,
    };
    let matches = match config {
        Some(path) => match crate::agent_config::with_file(cmd, &path) {
            Ok(cmd) => cmd.get_matches(),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        },
        None => matches,
    };
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

#[derive(Args, Clone)]
pub struct AgentArgs {
    /// A TOML file of agent settings: each key a flag's long name
    /// (`data-dir = "/var/lib/wharf"`, `join = ["10.0.0.5:5050"]`). Flags
    /// and their WHARF_* variables win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where this node keeps its state and task sandboxes.
    #[arg(long, default_value = ".wharf")]
    pub data_dir: PathBuf,
    /// HTTP API, UI and metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: String,
    /// Cluster RPC (Raft, forwarding).
    #[arg(long, default_value = "0.0.0.0:5050")]
    pub rpc: String,
    /// Address other nodes and clients use for this node (default: the
    /// --http address if specific, else 127.0.0.1).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Host ports handed to tasks, LO-HI.
    #[arg(long, default_value = "31000-32000")]
    pub ports: String,
    /// Override detected resources: "cpus:N;mem:MB;disk:MB;gpus:N".
    #[arg(long)]
    pub resources: Option<String>,
    /// Node attributes for constraints: "k:v;k:v".
    #[arg(long)]
    pub attributes: Option<String>,
    /// Host name reported for this node (default: the system's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Join a running cluster through any member's --rpc address(es), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// The cluster's join token (`wharf token show` on a member, or the
    /// file `join-token` in its data dir): needed with --join by a node
    /// that has no certificate yet. `--token` is read too when it holds one.
    #[arg(long, env = "WHARF_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Node-to-node calls over plain HTTP, without TLS or authentication.
    /// Only for measuring what mutual TLS costs (`wharf bench cluster
    /// --insecure-rpc`); every node of the cluster must have it.
    #[arg(long)]
    pub insecure_rpc: bool,
    /// Lifetime of this node's certificates, in seconds; each is renewed at
    /// two thirds of it (default 90 days).
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    pub cert_lifetime: u64,
    /// How many nodes vote in Raft (3 or 5); later nodes are learners.
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// Seconds without a heartbeat before a node is unreachable.
    #[arg(long, default_value_t = 3.0)]
    pub heartbeat_timeout: f64,
    /// Finished runs each job keeps in its history, cluster-wide (Metronome's
    /// METRONOME_HISTORY_COUNT). The leader writes it into the replicated
    /// settings; without it the cluster's current value stays (default 100).
    #[arg(long, env = "WHARF_JOB_HISTORY_COUNT", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub job_history_count: Option<u32>,
    /// Range service ports are assigned from, LO-HI, cluster-wide (Marathon's
    /// --local_port_min/max); a port an app asks for must lie in it. The
    /// leader writes it into the replicated settings; without it the
    /// cluster's current range stays (default 10000-20000).
    #[arg(long, value_name = "LO-HI")]
    pub service_ports: Option<model::ServicePortRange>,
    /// Sandboxes (logs) of finished tasks kept on this node; older ones are deleted.
    #[arg(long, default_value_t = 100)]
    pub keep_sandboxes: usize,
    /// Size at which a task's stdout or stderr file is rotated (bytes, or
    /// with K, M or G).
    #[arg(long, default_value = "10M")]
    pub log_max_size: String,
    /// Files kept per task stream, the one being written included; older
    /// output is dropped.
    #[arg(long, default_value_t = 5)]
    pub log_files: u32,
    /// This node's own log lines: `text` for people, `json` (one object per
    /// line, with the span fields) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds a voter may be unreachable before a learner replaces it.
    #[arg(long, default_value_t = 30.0)]
    pub voter_replace_after: f64,
    #[command(flatten)]
    pub dns: DnsArgs,
    /// Where every app's TCP service ports listen on this node (default: the
    /// --http IP).
    #[arg(long)]
    pub lb_bind: Option<String>,
    /// The HTTP front for virtual hosts, or `off` (default: port 80 on the
    /// --lb-bind address, falling back to 9090 when 80 cannot be bound).
    #[arg(long)]
    pub http_lb: Option<String>,
    /// A registry (HOST:PORT) the built-in runtime pulls from over plain
    /// HTTP (repeatable); loopback registries always are, as with Docker.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Who runs `DOCKER` apps: the Docker `engine`, or `builtin` (the
    /// built-in runtime, with no engine needed).
    #[arg(long = "docker-apps", default_value = "engine", value_parser = ["engine", "builtin"])]
    pub docker_apps: String,
    /// Restrict this node's load balancer to the apps labelled
    /// `HAPROXY_GROUP` with one of these groups (comma-separated; `*`: every
    /// app). Without it the node proxies every app that has no
    /// `HAPROXY_GROUP`; an app with one is proxied only on its group's nodes.
    #[arg(long, value_delimiter = ',')]
    pub lb_group: Option<Vec<String>>,
    /// USER:PASSWORD for HTTP Basic authentication (Marathon's flag), with
    /// the admin role. With it, or once any API token exists, every request
    /// but /ping and the UI's files needs credentials.
    #[arg(long, env = "WHARF_HTTP_CREDENTIALS", hide_env_values = true)]
    pub http_credentials: Option<String>,
    /// A PEM certificate (chain) for the HTTP API: with --https-key, the
    /// --http port serves HTTPS only.
    #[arg(long, requires = "https_key")]
    pub https_cert: Option<PathBuf>,
    /// The PEM private key of --https-cert.
    #[arg(long, requires = "https_cert")]
    pub https_key: Option<PathBuf>,
    /// The user tasks of apps without a `user` run as (exec driver; default:
    /// the agent's own user).
    #[arg(long)]
    pub default_task_user: Option<String>,
    /// Fail the launch of tasks that would run as root (exec driver): apps
    /// must name a user, or --default-task-user must.
    #[arg(long)]
    pub refuse_root_tasks: bool,
    /// Keep the key that unwraps this node's copy of the cluster data key off
    /// the disk (Swarm's autolock): it is printed once when the node gets the
    /// data key, and after every restart secrets stay sealed on this node
    /// until `wharf unlock KEY`.
    #[arg(long)]
    pub autolock: bool,
    /// A Docker `config.json` whose `auths` hold registry credentials for
    /// the built-in runtime's pulls (default: $HOME/.docker/config.json when
    /// it exists). Read at every pull.
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// Images no task used for this long are removed, with the layers no
    /// other image shares (e.g. `90s`, `30m`, `24h`, `7d`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub image_gc_after: Duration,
    /// The subnet of the node's container bridge `wharf0` (bridge networking
    /// of the built-in runtime), as BRIDGE-ADDRESS/PREFIX or NETWORK/PREFIX
    /// (the bridge then takes the first address). Nodes may share one:
    /// nothing routes between their bridges.
    #[arg(long, default_value = agent::network::DEFAULT_SUBNET)]
    pub bridge_subnet: String,
    /// Turn on the kernel's cgroup `favordynmods` at start: a container's
    /// first process then joins its cgroup without waiting for an RCU grace
    /// period (the built-in runtime's start-latency stalls on v1 hosts).
    /// Host-wide, and kept until reboot on Linux 6.18+.
    #[arg(long)]
    pub cgroup_favordynmods: bool,
}

/// `NUMBER[ms|s|m|h|d]` (seconds without a unit). Written here because no
/// crate in the tree parses durations and this is all a flag needs.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("'{s}': the unit is one of ms, s, m, h, d")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The node's DNS server (Mesos-DNS names for the cluster domain).
#[derive(Args, Clone, Debug)]
pub struct DnsArgs {
    /// DNS listener, UDP and TCP, or `off` (default: port 53 on the --http
    /// address, falling back to 8053 when 53 cannot be bound).
    #[arg(long = "dns")]
    pub listen: Option<String>,
    /// The cluster domain DNS is authoritative for.
    #[arg(long = "dns-domain", default_value = "mesos")]
    pub domain: String,
    /// Labels of at most 24 characters without leading digits (Mesos-DNS's EnforceRFC952).
    #[arg(long = "dns-rfc952")]
    pub rfc952: bool,
    /// TTL of answers, in seconds.
    #[arg(long = "dns-ttl", default_value_t = 5)]
    pub ttl: u32,
    /// Resolvers for other names, comma-separated IP[:PORT] (default: /etc/resolv.conf's).
    #[arg(long = "dns-upstream", value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// A resolver for one zone: ZONE=IP[:PORT] (repeatable).
    #[arg(long = "dns-zone-upstream")]
    pub zone_upstream: Vec<String>,
    /// Clients (CIDRs, comma-separated) whose other names are forwarded;
    /// loopback and the cluster's nodes always are. Others get REFUSED.
    #[arg(long = "dns-forward-from", value_delimiter = ',')]
    pub forward_from: Vec<String>,
    /// Seconds to wait for one upstream before asking the next.
    #[arg(long = "dns-timeout", default_value_t = 2.0)]
    pub timeout: f64,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create or update an app from a Marathon JSON file and follow the
    /// deployment until it is done (or says why it failed).
    #[command(
        after_help = "Example:\n  echo '{\"id\": \"/web\", \"cmd\": \"python3 -m http.server $PORT0\", \"instances\": 2}' > web.json\n  wharf app deploy web.json"
    )]
    Deploy {
        file: PathBuf,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
        /// Stop waiting after this many seconds (the deployment goes on).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List apps with their instances, running, healthy and staged tasks.
    #[command(after_help = "Examples:\n  wharf app ls\n  wharf app ls --json | jq -r '.apps[].id'")]
    Ls {
        /// Print `/v2/apps` as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One app: its definition's essentials, counts, deployments, last
    /// failure and tasks.
    #[command(after_help = "Examples:\n  wharf app show /web\n  wharf app show /web --json")]
    Show {
        id: String,
        /// Print `/v2/apps/ID` (with tasks, deployments, last failure) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What deploying FILE would change in the running app, field by field.
    #[command(after_help = "Example:\n  wharf app diff web.json && wharf app deploy web.json")]
    Diff { file: PathBuf },
    /// Change an app's instance count and follow the deployment.
    #[command(after_help = "Example:\n  wharf app scale /web 5")]
    Scale {
        id: String,
        instances: u32,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
        /// Stop waiting after this many seconds (the deployment goes on).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Delete an app and wait until its tasks are gone.
    #[command(after_help = "Example:\n  wharf app rm /web")]
    Rm {
        id: String,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
        /// Stop waiting after this many seconds (the removal goes on).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Replace every task of an app (rolling, as a config change would).
    #[command(after_help = "Example:\n  wharf app restart /web")]
    Restart {
        id: String,
        /// Override a deployment that holds the app.
        #[arg(long)]
        force: bool,
        /// Stop waiting after this many seconds (the deployment goes on).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// Deployments in flight with their step and current actions.
    #[command(after_help = "Examples:\n  wharf deployment ls\n  wharf deployment ls --json")]
    Ls {
        /// Print `/v2/deployments` as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a deployment and roll its apps back to the versions before it.
    #[command(
        after_help = "Examples:\n  wharf deployment rm 5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43\n  wharf deployment rm ID --force   (forget it, leave the apps as they are)"
    )]
    Rm {
        id: String,
        /// Only forget the deployment; no rollback.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes with their role, status and resources used/total.
    #[command(after_help = "Examples:\n  wharf node ls\n  wharf node ls --json | jq '.nodes[].used'")]
    Ls {
        /// Print `/wharf/v1/nodes` as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every task off a node and give it no new ones.
    #[command(after_help = "Example:\n  wharf node drain 3   (ids from `wharf node ls`)")]
    Drain { id: String },
    /// Remove a node from the cluster (its tasks are replaced elsewhere).
    #[command(after_help = "Example:\n  wharf node rm 3   (ids from `wharf node ls`)")]
    Rm { id: String },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; its value is read from stdin, or from
    /// `--file`, byte for byte.
    #[command(after_help = "Example:\n  printf %s \"$PW\" | wharf secret put prod/db-password")]
    Put {
        /// Where it lives, e.g. `prod/db-password` (letters, digits, `.`,
        /// `_`, `-`, separated by `/`).
        path: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// List secrets: path and times (never values).
    #[command(after_help = "Example:\n  wharf secret ls")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret (running tasks keep what they were given).
    #[command(after_help = "Example:\n  wharf secret rm prod/db-password")]
    Rm { path: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a bearer token and print it (it is shown only this once).
    ///
    /// Example: `export WHARF_TOKEN=$(wharf token create --role deployer --name ci)`
    Create {
        /// viewer (read, follow events), deployer (also change apps, groups,
        /// tasks, deployments) or admin (also nodes, leadership, tokens).
        #[arg(long)]
        role: String,
        /// A label to recognise it by in `wharf token ls`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens: id, role, name, creation time (never the secrets).
    #[command(after_help = "Example:\n  wharf token ls")]
    Ls,
    /// Revoke a token by its id.
    #[command(after_help = "Example:\n  wharf token rm ID   (ids from `wharf token ls`)")]
    Rm { id: String },
    /// Print the cluster's join token (for `wharf agent --join ADDR --join-token T`).
    #[command(after_help = "Example:\n  wharf agent --join 10.0.0.5:5050 --join-token $(wharf token show)")]
    Show,
    /// Make a new join token; the old one is refused from now on (nodes
    /// that already joined keep their certificates).
    #[command(after_help = "Example:\n  wharf token rotate")]
    Rotate,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Scheduled jobs: fire time -> task running (p50/p99), and many jobs
    /// firing each minute on one node (its CPU, the spread of start times).
    Jobs {
        /// Runs of a job firing every second, for the latency figures.
        #[arg(long, default_value_t = 100)]
        runs: u32,
        /// Jobs each firing every minute, for the load figures (0: skip).
        #[arg(long, default_value_t = 1000)]
        jobs: u32,
        /// Fire minutes measured under load.
        #[arg(long, default_value_t = 2)]
        minutes: u32,
    },
    /// Launch latency (POST accepted -> task process running) and throughput.
    #[command(after_help = "Example:\n  wharf bench launch --tasks 200 --burst 100")]
    Launch {
        /// Tasks launched one after another for the latency figures.
        #[arg(long, default_value_t = 200)]
        tasks: u32,
        /// Tasks launched at once (one app) for the throughput figure.
        #[arg(long, default_value_t = 100)]
        burst: u32,
        /// Scratch directory for the benchmark node (default: a temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Container start latency (placement -> process running) through the
    /// Docker driver, beside `docker run --rm` on the same engine.
    #[command(after_help = "Example:\n  wharf bench containers --starts 100")]
    Containers {
        /// Sequential starts for each side.
        #[arg(long, default_value_t = 100)]
        starts: u32,
        /// An image present on the engine (the default one is built if missing).
        #[arg(long, default_value = crate::bench_containers::DEFAULT_IMAGE)]
        image: String,
        /// Which runtimes to measure: `docker` (the Docker driver beside
        /// `docker run`), `builtin` (the oci driver beside `runc run`, memory,
        /// pulls), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "docker,builtin")]
        runtimes: Vec<String>,
        /// Parts of the built-in runtime's run to leave out: `bridge` (its
        /// starts on the node's bridge), `memory` (100 containers), `pulls`;
        /// comma-separated.
        #[arg(long, value_delimiter = ',')]
        skip: Vec<String>,
    },
    /// Rolling deployment time with health checks, and CPU under many health checks.
    #[command(after_help = "Example:\n  wharf bench health --rounds 3 --tasks 1000")]
    Health {
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value_t = 1000)]
        tasks: u32,
    },
    /// The core at scale: a real leader with thousands of simulated nodes and
    /// agents: placements/s, read latency, node loss, memory, snapshots.
    #[command(after_help = "Example:\n  wharf bench scale --nodes 100 --apps 100 --tasks-per-node 10 --hold 90")]
    Scale {
        /// Simulated node counts, one run each (e.g. `1000,10000`).
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 10000])]
        nodes: Vec<usize>,
        /// Apps deployed in each run.
        #[arg(long, default_value_t = 1000)]
        apps: usize,
        /// Tasks per simulated node (spread over the apps).
        #[arg(long, default_value_t = 10)]
        tasks_per_node: usize,
        /// Reads of each big listing per run at least: when the run's phases
        /// are over sooner, 10% of the apps are rolled again and again (the
        /// same load) until the readers have this many.
        #[arg(long, default_value_t = 200)]
        reads: usize,
        /// Keep each run's cluster up this many seconds after measuring, to
        /// look at its UI and /metrics.
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
    },
    /// DNS: queries/s and latency beside NSD (dnsperf), and how fast a task
    /// that turns healthy appears in another node's answers.
    #[command(after_help = "Example:\n  wharf bench dns --apps 1000 --seconds 10")]
    Dns {
        /// Apps (one task each) whose A and SRV names are asked.
        #[arg(long, default_value_t = 1000)]
        apps: usize,
        /// Seconds of dnsperf per server.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Tasks timed for propagation.
        #[arg(long, default_value_t = 100)]
        tasks: usize,
    },
    /// The load balancer beside HAProxy (wrk): requests/s and p99 through the
    /// HTTP front and an L4 service port, and new connections/s.
    #[command(
        after_help = "Examples:\n  wharf bench lb --seconds 10 --connections 50 --rounds 3\n  wharf bench lb --seconds 6 --rounds 15 --paths l4"
    )]
    Lb {
        /// Seconds of wrk per path.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Open connections wrk keeps.
        #[arg(long, default_value_t = 50)]
        connections: u32,
        /// Rounds over every path (Wharf and HAProxy back to back, each
        /// round in the other order); the table shows medians.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Fixed rates (open loop) offered through the HTTP front and the L4
        /// port beside HAProxy, in percent of HAProxy's requests/s in the
        /// first round; `--rates 0` for none.
        #[arg(long, value_delimiter = ',', default_value = "50,80")]
        rates: Vec<u32>,
        /// The paths to measure: `http` (the HTTP front), `l4` (a service
        /// port, keep-alive), `new` (a service port, a new connection per
        /// request).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "http,l4,new")]
        paths: Vec<crate::bench_lb::LbPath>,
    },
    /// Following a chatty task's log: lines/s `logs -f` keeps up with
    /// (every line checked), beside `docker logs -f` of the same program.
    #[command(after_help = "Example:\n  wharf bench logs --lines 1000000 --log-max-size 1M")]
    Logs {
        /// Lines the task prints as fast as it can.
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        /// The node's --log-max-size for the run.
        #[arg(long, default_value = "10M")]
        log_max_size: String,
        /// The node's --log-files for the run.
        #[arg(long, default_value_t = 5)]
        log_files: u32,
    },
    /// Three nodes on 127.77.0.1-3: write throughput, leader failover, node loss.
    #[command(
        after_help = "Examples:\n  wharf bench cluster --rounds 3\n  wharf bench cluster --vs-etcd --clients 1,64"
    )]
    Cluster {
        /// Leader kills to time.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Only durable writes, side by side with a 3-member etcd on
        /// 127.78.0.1-3 (needs `etcd` on the PATH: `apt-get install etcd-server`).
        #[arg(long)]
        vs_etcd: bool,
        /// Seconds of write load measured per client count.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of write load before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Concurrent clients for --vs-etcd, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        /// Measure again on a cluster whose nodes run with --insecure-rpc
        /// (no TLS between nodes) and print what mutual TLS costs.
        #[arg(long)]
        vs_insecure_rpc: bool,
    },
}

pub async fn dispatch(cli: Cli, matches: ArgMatches) -> anyhow::Result<()> {
    let client = crate::client::Client::with_auth(&cli.addr, cli.token.as_deref(), cli.cacert.as_deref())?;
    match cli.command {
        Command::Cluster(ClusterCommand::Up { nodes, dir, base, timeout, agent_args }) => {
            let timeout = Duration::from_secs(timeout);
            crate::cmd::cluster::up(crate::cmd::cluster::UpArgs { nodes, dir, base, timeout, agent_args }).await
        }
        Command::Cluster(ClusterCommand::Status { dir }) => crate::cmd::cluster::status(&dir).await,
        Command::Cluster(ClusterCommand::Down { dir, purge }) => crate::cmd::cluster::down(&dir, purge).await,
        Command::Install(args) => {
            let cmd = Cli::command();
            let agent = cmd.find_subcommand(crate::agent_config::AGENT).context("no agent subcommand")?;
            let sub = matches.subcommand_matches("install").context("no install matches")?;
            let plan = crate::cmd::install::InstallPlan {
                flags: crate::agent_config::given(agent, sub),
                agent_has_join_token: agent.get_arguments().any(|a| a.get_long() == Some("join-token")),
                root: args.root,
                bin: args.bin,
                token: cli.token,
                http: args.agent.http,
                advertise: args.agent.advertise,
            };
            crate::cmd::install::install(plan).await
        }
        Command::Demo(DemoCommand::Up { data_dir, front, example }) => {
            crate::cmd::demo::up(&cli.addr, example, &data_dir, front.as_deref())
        }
        Command::Demo(DemoCommand::Down { example }) => crate::cmd::demo::down(&cli.addr, example),
        Command::Uninstall { purge, root } => crate::cmd::install::uninstall(root.as_deref(), purge).await,
        Command::Agent(mut args) => {
            // `wharf agent --join ADDR --token WHARF-1-...` reads as it does in Swarm.
            if args.join_token.is_none() {
                args.join_token = cli.token.filter(|t| t.starts_with("WHARF-1-"));
            }
            crate::node::run(args).await
        }
        Command::Executor { .. } => Ok(()),
        Command::App(cmd) => crate::cmd::app::run(&client, cmd).await,
        Command::Job(cmd) => crate::cli_job::run(&client, cmd).await,
        Command::Ps { app, json } => crate::cmd::tasks::ps(&client, app, json).await,
        Command::Logs { task_id, app, follow, stderr, tail } => {
            let args = crate::cmd::logs::LogArgs { follow, stderr, tail };
            match (task_id, app) {
                (_, Some(app)) => crate::cmd::logs::app(&client, &app, args).await,
                (Some(task), None) => crate::cmd::logs::task(&client, &task, args).await,
                (None, None) => anyhow::bail!("name a task (wharf logs TASK_ID) or an app (wharf logs --app /web)"),
            }
        }
        Command::Deployment(DeploymentCommand::Ls { json }) => crate::cmd::deployment::ls(&client, json).await,
        Command::Deployment(DeploymentCommand::Rm { id, force }) => {
            crate::cmd::deployment::rm(&client, &id, force).await
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "wharf", &mut std::io::stdout());
            Ok(())
        }
        Command::Image(args) => crate::image_cmd::run(args).await,
        Command::Node(NodeCommand::Ls { json }) => crate::cmd::node::ls(&client, json).await,
        Command::Node(NodeCommand::Drain { id }) => crate::cmd::node::drain(&client, &id).await,
        Command::Node(NodeCommand::Rm { id }) => crate::cmd::node::rm(&client, &id).await,
        Command::Token(TokenCommand::Create { role, name }) => crate::cmd::token::create(&client, &role, &name).await,
        Command::Token(TokenCommand::Ls) => crate::cmd::token::ls(&client).await,
        Command::Token(TokenCommand::Show) => crate::cmd::token::show(&client).await,
        Command::Token(TokenCommand::Rotate) => crate::cmd::token::rotate(&client).await,
        Command::Token(TokenCommand::Rm { id }) => crate::cmd::token::rm(&client, &id).await,
        Command::Secret(SecretCommand::Put { path, file }) => {
            crate::cmd::secret::put(&client, &path, file.as_deref()).await
        }
        Command::Secret(SecretCommand::Ls { json }) => crate::cmd::secret::ls(&client, json).await,
        Command::Secret(SecretCommand::Rm { path }) => crate::cmd::secret::rm(&client, &path).await,
        Command::Unlock { key } => crate::cmd::secret::unlock(&client, key.as_deref()).await,
        Command::Bench(BenchCommand::Launch { tasks, burst, data_dir }) => {
            crate::bench::launch(tasks, burst, data_dir).await
        }
        Command::Bench(BenchCommand::Containers { starts, image, runtimes, skip }) => {
            crate::bench_containers::run(starts, image, runtimes, skip).await
        }
        Command::Bench(BenchCommand::Health { rounds, tasks }) => crate::bench::health(rounds, tasks).await,
        Command::Bench(BenchCommand::Jobs { runs, jobs, minutes }) => crate::bench_jobs::run(runs, jobs, minutes).await,
        Command::Bench(BenchCommand::Lb { seconds, connections, rounds, rates, paths }) => {
            crate::bench_lb::run(crate::bench_lb::LbBenchArgs { seconds, connections, rounds, rates, paths }).await
        }
        Command::Bench(BenchCommand::Logs { lines, log_max_size, log_files }) => {
            let args = crate::bench_logs::LogsBenchArgs { lines, max_size: log_max_size, files: log_files };
            crate::bench_logs::run(args).await
        }
        Command::Bench(BenchCommand::Dns { apps, seconds, tasks }) => {
            crate::bench_dns::run(crate::bench_dns::DnsBenchArgs { apps, seconds, tasks }).await
        }
        Command::Bench(BenchCommand::Scale { nodes, apps, tasks_per_node, reads, hold }) => {
            crate::bench_scale::run(crate::bench_scale::ScaleArgs { nodes, apps, tasks_per_node, reads, hold }).await
        }
        Command::Bench(BenchCommand::Cluster { rounds, vs_etcd, seconds, warmup, clients, vs_insecure_rpc }) => {
            let spec = crate::bench_cluster::LoadSpec {
                clients: 1,
                warmup: Duration::try_from_secs_f64(warmup).context("--warmup")?,
                measure: Duration::try_from_secs_f64(seconds).context("--seconds")?,
            };
            // Ctrl-C drops the run, so every node and etcd member it started
            // is stopped and the scratch directory removed.
            let bench = async {
                if vs_etcd {
                    crate::bench_etcd::run(spec, &clients).await
                } else {
                    crate::bench_cluster::run(rounds, spec, vs_insecure_rpc).await
                }
            };
            tokio::select! {
                r = bench => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the benchmark's processes were stopped"),
            }
        }
    }
}
