//! Kamailio (Debian `kamailio` 5.6) as a backend of the farm, configured the plain way
//! an operator would: a registrar and record-routing proxy listening on the backend's
//! own address, with no `advertise` of the VIP and no NAT helper (no `nathelper`, no
//! `fix_nated_*`), so whatever it writes into SIP names itself. Media is anchored on
//! the backend by rtpengine (the `rtpengine` module: `rtpengine_manage` on every SDP
//! offer and answer), so the SDP the phones receive names the backend's address too.
//!
//! Registrations are shared between the backends with `dmq_usrloc` (in-memory usrloc,
//! replicated over DMQ on the backends' own link), so a call can be placed on any
//! backend whatever the farm's affinity; or, without a DMQ peer, each backend is an
//! independent registrar that knows only the phones registered with it (the case
//! `callee` affinity exists for).
//!
//! Every SIP message it receives and sends (DMQ excepted) is logged on one line,
//! `e2e-rx`/`e2e-tx <METHOD or code/METHOD> cseq=<n> cid=<Call-ID> to=<user> peer=<ip:port>`,
//! which [`Kamailio::messages`] reads back: what reached the backend, and from where.

use crate::netns::Netns;
use crate::process::Proc;
use anyhow::{bail, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Kamailio {
    pub addr: Ipv4Addr,
    proc: Proc,
}

/// A SIP message the backend received (`rx`) or sent.
#[derive(Clone, Debug)]
pub struct Logged {
    pub rx: bool,
    /// `INVITE`, `ACK` for requests; `200/INVITE` for responses.
    pub kind: String,
    pub cseq: u32,
    pub call_id: String,
    /// The To URI's user: the AOR of a REGISTER.
    pub to_user: String,
    /// Where it came from (rx) or went to (tx).
    pub peer: String,
}

/// How a backend keeps registrations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registrar<'a> {
    /// The other backend, its DMQ neighbour (None: registrations are not shared).
    pub dmq_peer: Option<Ipv4Addr>,
    /// REGISTERs must authenticate (digest, any user, this password); wrong
    /// credentials are challenged again with 401, as registrars do.
    pub password: Option<&'a str>,
}

/// The configuration: `addr` is the backend's own address, `ng` rtpengine's control
/// socket.
pub fn config(addr: Ipv4Addr, ng: SocketAddr, registrar: Registrar<'_>) -> String {
    let peer = registrar.dmq_peer;
    let (auth_module, auth_check) = match registrar.password {
        Some(p) => (
            "loadmodule \"auth.so\"\n".to_string(),
            format!(
                "\t\tif (!pv_auth_check(\"$fd\", \"{p}\", \"0\", \"0\")) {{\n\t\t\tauth_challenge(\"$fd\", \"0\");\n\t\t\texit;\n\t\t}}\n"
            ),
        ),
        None => (String::new(), String::new()),
    };
    let dmq = match peer {
        Some(peer) => format!(
            r#"loadmodule "dmq.so"
loadmodule "dmq_usrloc.so"
modparam("dmq", "server_address", "sip:{addr}:5060")
modparam("dmq", "notification_address", "sip:{peer}:5060")
modparam("dmq_usrloc", "enable", 1)
"#
        ),
        None => String::new(),
    };
    let dmq_route = if peer.is_some() {
        "\tif (is_method(\"KDMQ\")) {\n\t\txlog(\"L_NOTICE\", \"e2e-dmq $rU from $si:$sp\\n\");\n\t\tdmq_handle_message();\n\t\texit;\n\t}\n"
    } else {
        ""
    };
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:{addr}:5060
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
server_signature=no
sip_warning=no
onsend_route_reply=yes

mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "rtpengine.so"
{auth_module}{dmq}
modparam("usrloc", "db_mode", 0)
modparam("rtpengine", "rtpengine_sock", "udp:{ng}")

request_route {{
{dmq_route}	xlog("L_NOTICE", "e2e-rx $rm cseq=$cs cid=$ci to=$tU peer=$si:$sp\n");
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			if (is_method("BYE")) {{
				rtpengine_delete();
			}} else if (is_method("INVITE|UPDATE") && has_body("application/sdp")) {{
				rtpengine_manage();
				t_on_reply("MEDIA");
			}} else if (is_method("ACK") && has_body("application/sdp")) {{
				rtpengine_manage();
			}}
			route(RELAY);
		}}
		if (is_method("ACK") && t_check_trans()) {{
			route(RELAY);
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			rtpengine_delete();
			route(RELAY);
		}}
		exit;
	}}
	if (t_check_trans()) {{
		exit;
	}}
	remove_hf("Route");
	if (is_method("REGISTER")) {{
{auth_check}		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (!lookup("location")) {{
		sl_send_reply("404", "Not Found");
		exit;
	}}
	if (is_method("INVITE")) {{
		record_route();
		if (has_body("application/sdp")) {{
			rtpengine_manage();
		}}
		t_on_reply("MEDIA");
		t_on_failure("FAILED");
	}}
	route(RELAY);
}}

route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}

onreply_route[MEDIA] {{
	if (has_body("application/sdp")) {{
		rtpengine_manage();
	}}
}}

failure_route[FAILED] {{
	rtpengine_delete();
}}

reply_route {{
	xlog("L_NOTICE", "e2e-rx $rs/$rm cseq=$cs cid=$ci to=$tU peer=$si:$sp\n");
}}

onsend_route {{
	if (is_method("KDMQ")) {{
		return;
	}}
	if (is_reply()) {{
		xlog("L_NOTICE", "e2e-tx $rs/$rm cseq=$cs cid=$ci to=$tU peer=$sndto(ip):$sndto(port)\n");
	}} else {{
		xlog("L_NOTICE", "e2e-tx $rm cseq=$cs cid=$ci to=$tU peer=$sndto(ip):$sndto(port)\n");
	}}
}}
"#
    )
}

impl Kamailio {
    /// Writes the configuration and starts Kamailio in `ns` (rtpengine must already
    /// answer on `ng`: Kamailio disables a relay that misses its first ping for a
    /// minute). Stops by itself after `life`.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        addr: Ipv4Addr,
        ng: SocketAddr,
        registrar: Registrar<'_>,
        life: Duration,
    ) -> Result<Kamailio> {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, config(addr, ng, registrar))?;
        let run = dir.join(format!("{name}-run"));
        std::fs::create_dir_all(&run)?;
        let mut cmd = ns.command("timeout");
        cmd.arg(life.as_secs().max(1).to_string())
            .args(["kamailio", "-DD", "-E", "-m", "64", "-M", "8", "-f"])
            .arg(&cfg)
            // Its runtime files (control FIFOs, pid) in the test's directory.
            .arg("-Y")
            .arg(&run)
            .arg("-w")
            .arg(&run);
        let proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        let mut k = Kamailio { addr, proc };
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = format!("{addr}:5060");
        while !ns
            .run("ss", &["-Hlun", "sport = :5060"])
            .is_ok_and(|o| o.contains(&want))
        {
            if !k.proc.running() || Instant::now() >= deadline {
                bail!(
                    "{name} (kamailio) not listening on {want}:\n{}",
                    k.proc.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(k)
    }

    /// Waits up to `d` until a DMQ message from `peer` arrived (the two know each other
    /// and will replicate registrations).
    pub fn wait_dmq_peer(&mut self, peer: Ipv4Addr, d: Duration) -> Result<()> {
        self.proc.wait_for_output(&format!(" from {peer}:5060"), d)
    }

    /// Every SIP message it logged, in order.
    pub fn messages(&self) -> Vec<Logged> {
        self.proc.output().lines().filter_map(parse_line).collect()
    }

    pub fn log(&self) -> String {
        self.proc.output()
    }
}

fn parse_line(l: &str) -> Option<Logged> {
    let (rx, rest) = if let Some(i) = l.find("e2e-rx ") {
        (true, &l[i + 7..])
    } else {
        (false, &l[l.find("e2e-tx ")? + 7..])
    };
    let mut w = rest.split_whitespace();
    let kind = w.next()?.to_string();
    let mut cseq = 0;
    let mut call_id = String::new();
    let mut peer = String::new();
    let mut to_user = String::new();
    for t in w {
        if let Some(v) = t.strip_prefix("cseq=") {
            cseq = v.parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("cid=") {
            call_id = v.to_string();
        } else if let Some(v) = t.strip_prefix("to=") {
            to_user = v.to_string();
        } else if let Some(v) = t.strip_prefix("peer=") {
            peer = v.to_string();
        }
    }
    Some(Logged {
        rx,
        kind,
        cseq,
        call_id,
        to_user,
        peer,
    })
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse() {
        let m = parse_line(
            " 2(123) NOTICE: <script>: e2e-rx 200/INVITE cseq=7 cid=abc@x to=bob peer=198.18.0.2:5060",
        )
        .unwrap();
        assert!(m.rx);
        assert_eq!(m.to_user, "bob");
        assert_eq!(
            (m.kind.as_str(), m.cseq, m.call_id.as_str(), m.peer.as_str()),
            ("200/INVITE", 7, "abc@x", "198.18.0.2:5060")
        );
        assert!(
            !parse_line("x e2e-tx ACK cseq=1 cid=c peer=198.18.1.12:5060")
                .unwrap()
                .rx
        );
        assert!(parse_line("INFO: <core> startup").is_none());
    }
}
