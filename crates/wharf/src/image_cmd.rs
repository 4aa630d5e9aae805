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
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image (again, even if present).
    Pull { reference: String },
    /// Import a `docker save` archive (under its tag, or REFERENCE).
    Import { archive: PathBuf, reference: Option<String> },
    /// List the images.
    Ls,
    /// Forget an image and delete the layers no other image uses.
    Rm { reference: String },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("images");
    let store = image::ImageStore::open(root.clone(), args.insecure_registries)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    match args.command {
        ImageCommand::Pull { reference } => {
            let img = store.ensure(&reference, true, None).await?;
            println!("{} {} ({} layers, {:.1} MB)", img.reference, img.digest, img.layers.len(), mb(img.size));
        }
        ImageCommand::Import { archive, reference } => {
            let img = store.import_docker_archive(&archive, reference.as_deref())?;
            println!("{} ({} layers, {:.1} MB)", img.reference, img.layers.len(), mb(img.size));
        }
        ImageCommand::Ls => {
            println!("{:<50} {:<20} {:>7} {:>10}", "REFERENCE", "DIGEST", "LAYERS", "SIZE (MB)");
            for img in store.list() {
                let short: String = img.digest.chars().take(19).collect();
                println!("{:<50} {:<20} {:>7} {:>10.1}", img.reference, short, img.layers.len(), mb(img.size));
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
