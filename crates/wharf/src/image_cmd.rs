//! `wharf image pull|import|ls|rm`: the built-in runtime's image store of a
//! node on this host, worked on directly in its `--data-dir` (images are per
//! node; a running agent sees the changes at its next launch).

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct ImageArgs {
    /// The node's data directory (as given to `wharf agent`).
    #[arg(long, default_value = ".wharf")]
    pub data_dir: PathBuf,
    /// A registry (HOST:PORT) to pull from over plain HTTP (repeatable);
    /// loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A Docker `config.json` with registry credentials (`auths`); default:
    /// $HOME/.docker/config.json when it exists.
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image (again, even if present).
    Pull { reference: String },
    /// Import an OCI image layout (a directory, or a tar of one) or a
    /// `docker save` archive, under REFERENCE or the name it carries.
    Import { path: PathBuf, reference: Option<String> },
    /// List the images.
    Ls,
    /// Forget an image and delete the layers no other image uses (refused
    /// while a running container uses it).
    Rm { reference: String },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("images");
    let config = image::StoreConfig {
        insecure: args.insecure_registries,
        registry_config: image::default_registry_config(args.registry_config),
    };
    let store = image::ImageStore::open_with(root.clone(), config)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    match args.command {
        ImageCommand::Pull { reference } => {
            let img = store.ensure(&reference, true, None).await?;
            println!("{} {} ({} layers, {:.1} MB)", img.reference, img.digest, img.layers.len(), mb(img.size));
        }
        ImageCommand::Import { path, reference } => {
            let img = store.import(&path, reference.as_deref())?;
            println!("{} ({} layers, {:.1} MB)", img.reference, img.layers.len(), mb(img.size));
        }
        ImageCommand::Ls => {
            println!("{:<50} {:<20} {:>7} {:>10}  LAST USED", "REFERENCE", "DIGEST", "LAYERS", "SIZE (MB)");
            for img in store.list() {
                let short: String = img.digest.chars().take(19).collect();
                let used = marathon::format_time(model::UnixMillis(i64::try_from(img.last_used).unwrap_or(0)));
                println!("{:<50} {:<20} {:>7} {:>10.1}  {used}", img.reference, short, img.layers.len(), mb(img.size));
            }
        }
        ImageCommand::Rm { reference } => {
            if !store.remove(&reference)? {
                anyhow::bail!("no image {reference} in {}", root.display());
            }
            let layers = store.gc();
            println!("removed {reference} ({layers} layers no other image uses deleted)");
        }
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
