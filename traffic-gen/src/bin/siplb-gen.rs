//! `siplb-gen [EAL args] -- [options]`: see `traffic_gen::options::Options`.

use clap::Parser;
use traffic_gen::options::Options;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let prog = args.first().cloned().unwrap_or_else(|| "siplb-gen".into());
    // Like testpmd: EAL arguments before `--`, ours after it.
    let (eal, ours) = match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].to_vec(), &args[i + 1..]),
        None => (vec![prog.clone()], &args[1..]),
    };
    let opts = Options::parse_from(std::iter::once(prog).chain(ours.iter().cloned()));
    match traffic_gen::app::run(&eal, opts.clone()) {
        Ok(summary) => {
            print!("siplb-gen: final summary\n{}", summary.render());
            if let Some(path) = &opts.json {
                let written = std::fs::File::create(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|f| {
                        serde_json::to_writer_pretty(f, &summary).map_err(anyhow::Error::from)
                    });
                if let Err(e) = written {
                    eprintln!("siplb-gen: error: writing {}: {e}", path.display());
                    std::process::exit(2);
                }
            }
        }
        Err(e) => {
            eprintln!("siplb-gen: error: {e:#}");
            std::process::exit(2);
        }
    }
}
