//! Where the processes of one balancer meet: the DPDK file prefix and the run
//! directory. Resolved here and nowhere else, from the configuration
//! (`Config::runtime`) or, for a client that must work although the file has mistakes,
//! from the two fields that decide them (`Runtime::of_file`).

use super::error::{read, toml_error, ConfigError};
use super::Config;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// The DPDK file prefix when the EAL arguments name none.
const DEFAULT_FILE_PREFIX: &str = "siplb";
/// `[control] run_dir` when the configuration sets none.
pub(super) const DEFAULT_RUN_DIR: &str = "/run/siplb";

/// What every process of one balancer must agree on to find the others; the files and
/// DPDK objects named after them are in `siplb-runtime`'s `names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// DPDK's `--file-prefix`: names the dataplane's shared memory, rings and hugepage
    /// files, which the control plane attaches to.
    pub file_prefix: String,
    /// `[control] run_dir`: the control socket and the lock.
    pub run_dir: PathBuf,
}

impl Runtime {
    pub fn new(file_prefix: &str, run_dir: &Path) -> Runtime {
        Runtime {
            file_prefix: file_prefix.to_string(),
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// The runtime of a dataplane started with `eal_args` (the prefix they name, else
    /// the default), under `run_dir`.
    fn resolve(eal_args: &[String], run_dir: &str) -> Runtime {
        let prefix = file_prefix_arg(eal_args).unwrap_or(DEFAULT_FILE_PREFIX);
        Runtime::new(prefix, Path::new(run_dir))
    }

    /// The runtime of the balancer configured in `file`, read leniently: only
    /// `[dataplane] eal_args` and `[control] run_dir` count, and a value of the wrong
    /// type counts as absent, so that a file with a mistake elsewhere does not stop
    /// the operator from talking to the running balancer. Only unreadable files and
    /// TOML syntax errors fail.
    pub fn of_file(file: &Path) -> Result<Runtime, ConfigError> {
        let src = read(file)?;
        let fields: RuntimeFields = toml::from_str(&src).map_err(|e| toml_error(&src, file, e))?;
        Ok(Runtime::resolve(
            &fields.dataplane.eal_args,
            fields.control.run_dir.as_deref().unwrap_or(DEFAULT_RUN_DIR),
        ))
    }
}

impl Default for Runtime {
    /// The runtime of a balancer without a configuration file.
    fn default() -> Runtime {
        Runtime::resolve(&[], DEFAULT_RUN_DIR)
    }
}

impl Config {
    /// Where this balancer's processes meet; `eal_extra` are the EAL arguments given on
    /// the command line (after `--`), which may name the file prefix too.
    pub fn runtime(&self, eal_extra: &[String]) -> Runtime {
        Runtime::resolve(
            &[&self.dataplane.eal_args[..], eal_extra].concat(),
            &self.control.run_dir,
        )
    }

    /// The dataplane's EAL arguments: `[dataplane] eal_args`, then `eal_extra`, then the
    /// file prefix of `runtime` when they name none (so DPDK and `runtime` agree).
    pub fn eal_args(&self, eal_extra: &[String]) -> Vec<String> {
        let mut args = [&self.dataplane.eal_args[..], eal_extra].concat();
        if file_prefix_arg(&args).is_none() {
            args.extend(["--file-prefix".into(), self.runtime(eal_extra).file_prefix]);
        }
        args
    }
}

/// The `--file-prefix` value in EAL arguments (`--file-prefix X` or `--file-prefix=X`);
/// the last one, as for the EAL itself.
fn file_prefix_arg(eal_args: &[String]) -> Option<&str> {
    let mut found = None;
    let mut it = eal_args.iter();
    while let Some(a) = it.next() {
        if a == "--file-prefix" {
            found = it.next().map(String::as_str).or(found);
        } else if let Some(v) = a.strip_prefix("--file-prefix=") {
            found = Some(v);
        }
    }
    found
}

/// The fields of a configuration file that `Runtime::of_file` reads; everything else
/// in the file is ignored.
#[derive(Default, Deserialize)]
struct RuntimeFields {
    #[serde(default, deserialize_with = "or_absent")]
    dataplane: DataplaneFields,
    #[serde(default, deserialize_with = "or_absent")]
    control: ControlFields,
}

#[derive(Default, Deserialize)]
struct DataplaneFields {
    #[serde(default, deserialize_with = "or_absent")]
    eal_args: Vec<String>,
}

#[derive(Default, Deserialize)]
struct ControlFields {
    #[serde(default, deserialize_with = "or_absent")]
    run_dir: Option<String>,
}

/// A value of the wrong type reads as absent (the field's default).
fn or_absent<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    let v = toml::Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("siplb-runtime-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn without_a_file_the_defaults() {
        let d = Runtime::default();
        assert_eq!(d.file_prefix, "siplb");
        assert_eq!(d.run_dir, Path::new("/run/siplb"));
    }

    #[test]
    fn the_prefix_is_the_eal_args_last_one() {
        assert_eq!(file_prefix_arg(&strings(&["-l", "0-1"])), None);
        let both = strings(&["--file-prefix", "a", "--no-pci", "--file-prefix=b"]);
        assert_eq!(file_prefix_arg(&both), Some("b"));
        assert_eq!(
            file_prefix_arg(&strings(&["--file-prefix=a", "--file-prefix", "c"])),
            Some("c")
        );
    }

    #[test]
    fn eal_args_always_name_the_runtime_prefix() {
        let mut c = Config::parse(MINIMAL, Path::new("x")).unwrap();
        assert_eq!(c.runtime(&[]).file_prefix, DEFAULT_FILE_PREFIX);
        assert_eq!(c.eal_args(&[]), strings(&["--file-prefix", "siplb"]));
        c.dataplane.eal_args = strings(&["-l", "0-1", "--file-prefix", "one"]);
        let extra = strings(&["--file-prefix=two"]);
        assert_eq!(c.runtime(&[]).file_prefix, "one");
        assert_eq!(c.runtime(&extra).file_prefix, "two");
        assert_eq!(
            c.eal_args(&extra),
            strings(&["-l", "0-1", "--file-prefix", "one", "--file-prefix=two"])
        );
    }

    const MINIMAL: &str = "[control]\nrun_dir = \"/tmp/r\"\n[[port]]\nname = \"p\"\naddress = \"198.18.0.1/24\"\n[[farm]]\nname = \"f\"\nvip = \"198.18.0.2\"\nbackends = [ { address = \"198.18.0.11\" } ]\n";

    #[test]
    fn the_lenient_reading_agrees_with_the_configuration() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../siplb.example.toml");
        let strict = Config::load(&example).unwrap().runtime(&[]);
        assert_eq!(Runtime::of_file(&example).unwrap(), strict);
        let p = file("minimal.toml", MINIMAL);
        let strict = Config::load(&p).unwrap().runtime(&[]);
        assert_eq!(strict, Runtime::new("siplb", Path::new("/tmp/r")));
        assert_eq!(Runtime::of_file(&p).unwrap(), strict);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn mistakes_elsewhere_do_not_hide_the_runtime() {
        let p = file(
            "mistakes.toml",
            "[dataplane]\nworkers = \"many\"\neal_args = [\"--file-prefix\", \"lb7\"]\nbogus = 1\n\
             [control]\nrun_dir = \"/tmp/r7\"\n[[farm]]\nname = 3\n",
        );
        let r = Runtime::of_file(&p).unwrap();
        assert_eq!(r, Runtime::new("lb7", Path::new("/tmp/r7")));
        assert!(Config::load(&p).is_err());
        // A field of the wrong type reads as absent.
        std::fs::write(
            &p,
            "[control]\nrun_dir = 7\n[dataplane]\neal_args = \"x\"\n",
        )
        .unwrap();
        assert_eq!(Runtime::of_file(&p).unwrap(), Runtime::default());
        // Syntax errors and missing files are reported, located.
        std::fs::write(&p, "[control\n").unwrap();
        let e = Runtime::of_file(&p).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let _ = std::fs::remove_file(&p);
        let e = Runtime::of_file(&p).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
