//! Blocklist feeds (`[[security.feed]]`): each is fetched on its own thread (a file
//! read or an HTTP(S) GET, blocking: the daemon has no async runtime) every
//! `refresh_s`, and the answer comes back to the main loop as an `Event::Feed`. A
//! fetch that fails — unreachable, an HTTP error, malformed, or empty when the feed
//! had entries — keeps the feed's last good list, and is logged, counted and shown
//! (`siplb status`, `siplb_feed_errors_total`).
//!
//! The union of the feeds' last good lists goes to the dataplane as a file
//! (`lb::security::feed`), written aside and renamed into place; the desired state
//! names it with a hash of its contents, so the dataplane builds a new table only
//! when the union changed.

use super::Event;
use crate::api::FeedView;
use siplb_core::config::{FeedConfig, FeedFormat, Ipv4Net};
use siplb_core::hash::hash64;
use siplb_core::lb::security::feed::{self, FeedsFile};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// APIBAN pages (250 addresses each) fetched at most per refresh.
const APIBAN_PAGES: usize = 4000;
/// The largest answer read (a text list of 1 M prefixes is ~17 MB).
const BODY_LIMIT: u64 = 256 << 20;

struct Feed {
    cfg: FeedConfig,
    /// The last good list.
    prefixes: Vec<Ipv4Net>,
    fetched: bool,
    fetches: u64,
    errors: u64,
    /// Why the last fetch failed; empty when it succeeded.
    error: String,
    last_ok: Option<Instant>,
    next: Instant,
    in_flight: bool,
}

pub struct Feeds {
    feeds: Vec<Feed>,
    path: PathBuf,
    tx: Sender<Event>,
}

impl Feeds {
    /// Feeds whose union is written to `path`; results are sent on `tx`.
    pub fn new(path: PathBuf, tx: Sender<Event>) -> Self {
        Self {
            feeds: Vec::new(),
            path,
            tx,
        }
    }

    /// Follows the configuration (at start and on reload): a feed whose settings
    /// did not change keeps its list and schedule; a new or changed one is fetched
    /// now. Returns whether a feed that had a list was removed.
    pub fn sync(&mut self, cfgs: &[FeedConfig]) -> bool {
        let mut old = std::mem::take(&mut self.feeds);
        for c in cfgs {
            match old.iter().position(|f| f.cfg == *c) {
                Some(i) => self.feeds.push(old.swap_remove(i)),
                None => self.feeds.push(Feed {
                    cfg: c.clone(),
                    prefixes: Vec::new(),
                    fetched: false,
                    fetches: 0,
                    errors: 0,
                    error: String::new(),
                    last_ok: None,
                    next: Instant::now(),
                    in_flight: false,
                }),
            }
        }
        old.iter().any(|f| f.fetched)
    }

    /// Starts the fetches that are due.
    pub fn poll(&mut self) {
        let now = Instant::now();
        for f in self
            .feeds
            .iter_mut()
            .filter(|f| !f.in_flight && now >= f.next)
        {
            f.in_flight = true;
            let cfg = f.cfg.clone();
            let tx = self.tx.clone();
            std::thread::spawn(move || {
                let result = fetch(&cfg);
                let _ = tx.send(Event::Feed { cfg, result });
            });
        }
    }

    /// Takes a fetch's result. Returns a line for the log when it failed, and
    /// whether the union may have changed.
    pub fn done(
        &mut self,
        cfg: &FeedConfig,
        result: Result<Vec<Ipv4Net>, String>,
    ) -> (Option<String>, bool) {
        let Some(f) = self.feeds.iter_mut().find(|f| f.cfg == *cfg) else {
            return (None, false); // removed by a reload meanwhile
        };
        f.in_flight = false;
        f.fetches += 1;
        f.next = Instant::now() + Duration::from_secs(u64::from(cfg.refresh_s));
        let result = result.and_then(|p| {
            if p.is_empty() && !f.prefixes.is_empty() {
                Err(format!(
                    "{}: no entries, where the last fetch had {}",
                    cfg.source(),
                    f.prefixes.len()
                ))
            } else {
                Ok(p)
            }
        });
        match result {
            Ok(p) => {
                let changed = !f.fetched || p != f.prefixes;
                f.prefixes = p;
                f.fetched = true;
                f.error.clear();
                f.last_ok = Some(Instant::now());
                (None, changed)
            }
            Err(e) => {
                f.errors += 1;
                let line = format!(
                    "feed `{}`: {e}: its last good list ({} prefixes) stays in force; next try in {} s",
                    cfg.label(),
                    f.prefixes.len(),
                    cfg.refresh_s
                );
                f.error = e;
                (Some(line), false)
            }
        }
    }

    /// Writes the union of the last good lists (aside, then renamed into place) and
    /// says what the dataplane should read; `None` when no feed has a list yet.
    pub fn write(&self) -> Result<Option<FeedsFile>, String> {
        if !self.feeds.iter().any(|f| f.fetched) {
            return Ok(None);
        }
        let mut all: Vec<Ipv4Net> = self
            .feeds
            .iter()
            .flat_map(|f| f.prefixes.iter())
            .map(|p| Ipv4Net {
                addr: (u32::from(p.addr) & p.mask()).into(),
                len: p.len,
            })
            .collect();
        all.sort_unstable_by_key(|p| (u32::from(p.addr), p.len));
        all.dedup();
        let bytes = feed::encode(&all);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("writing the feeds' file {}: {e}", self.path.display()))?;
        Ok(Some(FeedsFile {
            path: self.path.display().to_string(),
            version: hash64(&bytes),
            prefixes: all.len(),
        }))
    }

    pub fn views(&self) -> Vec<FeedView> {
        self.feeds
            .iter()
            .map(|f| FeedView {
                name: f.cfg.label().to_string(),
                source: f.cfg.source().to_string(),
                prefixes: f.prefixes.len(),
                fetches: f.fetches,
                errors: f.errors,
                error: f.error.clone(),
                last_ok_s_ago: f.last_ok.map(|t| t.elapsed().as_secs()),
            })
            .collect()
    }
}

/// One fetch of a feed: its whole list.
fn fetch(cfg: &FeedConfig) -> Result<Vec<Ipv4Net>, String> {
    if !cfg.file.is_empty() {
        let text = std::fs::read_to_string(&cfg.file).map_err(|e| format!("{}: {e}", cfg.file))?;
        return match cfg.format {
            FeedFormat::Lines => feed::parse_lines(&text, &cfg.file),
            FeedFormat::Apiban => feed::parse_apiban(&text, &cfg.file).map(|(p, _)| p),
        };
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let get = |url: &str| -> Result<(u16, String), String> {
        let mut r = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        Ok((status, body))
    };
    match cfg.format {
        FeedFormat::Lines => {
            let (status, body) = get(&cfg.url)?;
            if !(200..300).contains(&status) {
                return Err(format!("{}: HTTP {status}", cfg.url));
            }
            feed::parse_lines(&body, &cfg.url)
        }
        FeedFormat::Apiban => {
            // Pages of 250, oldest first; the last answers "no new bans" (HTTP 400).
            let mut all = Vec::new();
            let mut url = cfg.url.clone();
            for _ in 0..APIBAN_PAGES {
                let (status, body) = get(&url)?;
                let ok = (200..300).contains(&status);
                if !ok && status != 400 {
                    return Err(format!("{url}: HTTP {status}"));
                }
                let (page, next) = feed::parse_apiban(&body, &url)?;
                if !(ok || next.is_none() && page.is_empty()) {
                    return Err(format!("{url}: HTTP {status}"));
                }
                all.extend(page);
                match next {
                    Some(id) => url = format!("{}/{id}", cfg.url.trim_end_matches('/')),
                    None => return Ok(all),
                }
            }
            Err(format!(
                "{}: more than {APIBAN_PAGES} pages: is the ID not moving on?",
                cfg.url
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(file: &str) -> FeedConfig {
        FeedConfig {
            file: file.into(),
            ..FeedConfig::default()
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_failing_or_emptied_feed_keeps_its_last_good_list() {
        let dir = std::env::temp_dir().join(format!("siplb-feeds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        let mut f = Feeds::new(dir.join("feeds.bin"), tx);
        let (a, b) = (cfg("a.txt"), cfg("b.txt"));
        f.sync(&[a.clone(), b.clone()]);
        assert_eq!(f.write().unwrap(), None, "nothing fetched yet");
        let (e, changed) = f.done(&a, Ok(vec![net("198.18.7.0/24"), net("198.18.8.8")]));
        assert!(e.is_none() && changed);
        f.done(&b, Ok(vec![net("198.18.7.9/24")]));
        let w = f.write().unwrap().unwrap();
        assert_eq!(w.prefixes, 2, "the union, deduplicated");
        let back = feed::decode(&std::fs::read(&w.path).unwrap(), "x").unwrap();
        assert_eq!(back, vec![net("198.18.7.0/24"), net("198.18.8.8")]);

        let (e, changed) = f.done(&a, Err("a.txt:3: bad".into()));
        assert!(!changed && e.unwrap().contains("(2 prefixes) stays"));
        let (e, changed) = f.done(&a, Ok(vec![]));
        assert!(
            !changed
                && e.unwrap()
                    .contains("no entries, where the last fetch had 2")
        );
        let v = f.views();
        assert_eq!((v[0].prefixes, v[0].errors, v[0].fetches), (2, 2, 3));
        assert_eq!(f.write().unwrap().unwrap().version, w.version);

        let (e, changed) = f.done(&a, Ok(vec![net("198.18.8.9")]));
        assert!(e.is_none() && changed);
        assert!(f.views()[0].error.is_empty());
        assert_ne!(f.write().unwrap().unwrap().version, w.version);
        f.sync(std::slice::from_ref(&b));
        assert_eq!(f.views().len(), 1, "a reload drops a removed feed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
