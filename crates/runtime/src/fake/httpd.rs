//! Built-in network commands of a fake container: busybox's `httpd` (a static file server)
//! and `nc -l` with `-e cat` (an echo server). Both listen on a port of the sandbox's
//! network namespace, reachable with `port_forward` until the process ends (it stays in the
//! foreground, even without `httpd -f`).

use bytes::Bytes;
use tokio::io::DuplexStream;

use super::fs::{normalize_path, FileView};
use super::ports::{echo_server, port_handler, serve_http, HttpResponse, PortHandler};
use super::process::FakeProcess;

/// busybox httpd's page for a missing file.
const NOT_FOUND: &str = "<HTML><HEAD><TITLE>404 Not Found</TITLE></HEAD>\n\
<BODY><H1>404 Not Found</H1>\nThe requested URL was not found\n</BODY></HTML>\n";

/// busybox httpd's page for a method it does not serve.
const NOT_IMPLEMENTED: &str = "<HTML><HEAD><TITLE>501 Not Implemented</TITLE></HEAD>\n\
<BODY><H1>501 Not Implemented</H1>\nThe requested method is not recognized\n</BODY></HTML>\n";

/// Parses a listening address, `PORT` or `ADDR:PORT`.
fn parse_port(arg: &str) -> Option<u16> {
    let port = arg.rsplit(':').next().unwrap_or(arg);
    port.parse().ok()
}

/// Holds `port` with `handler` until the process is killed; 1 if the port is taken.
async fn listen(p: &mut FakeProcess, name: &str, port: u16, handler: PortHandler) -> i32 {
    let Some(_listening) = p.listeners.listen(port, handler) else {
        let _ = p
            .eprint(format!("{name}: bind: Address already in use\n"))
            .await;
        return 1;
    };
    futures::future::pending::<i32>().await
}

/// `httpd [-f] [-v] [-p [ADDR:]PORT] [-h HOME]`: serves the files under HOME (the working
/// directory by default) on PORT (80 by default).
pub(super) async fn httpd(p: &mut FakeProcess, args: &[String]) -> i32 {
    let mut port = 80;
    let mut home = p.cwd.clone();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-p" | "-h" => {
                let Some(value) = args.next() else {
                    let _ = p
                        .eprint(format!(
                            "httpd: option requires an argument -- '{}'\n",
                            &arg[1..]
                        ))
                        .await;
                    return 1;
                };
                if arg == "-p" {
                    match parse_port(value) {
                        Some(n) => port = n,
                        None => {
                            let _ = p.eprint(format!("httpd: bad port '{value}'\n")).await;
                            return 1;
                        }
                    }
                } else {
                    home = normalize_path(&p.cwd, value);
                }
            }
            _ => {}
        }
    }
    let files = p.files.clone();
    let handler = port_handler(move |conn: DuplexStream| {
        let (files, home) = (files.clone(), home.clone());
        serve_http(conn, move |method, target| {
            serve_file(&files, &home, method, target)
        })
    });
    listen(p, "httpd", port, handler).await
}

/// The answer to `method target` from the files under `home`.
fn serve_file(files: &FileView, home: &str, method: &str, target: &str) -> HttpResponse {
    let html = |status, body: &'static str| HttpResponse {
        status,
        content_type: "text/html",
        body: Bytes::from_static(body.as_bytes()),
    };
    if method != "GET" && method != "HEAD" {
        return html(501, NOT_IMPLEMENTED);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = percent_decode(path);
    let mut full = normalize_path(home, &format!(".{path}"));
    if !full.starts_with(home) {
        return html(404, NOT_FOUND);
    }
    if files.stat(&full).is_ok_and(|info| info.is_dir()) {
        full = normalize_path(&full, "index.html");
    }
    match files.read(&full) {
        Ok(body) => HttpResponse {
            status: 200,
            content_type: content_type(&full),
            body,
        },
        Err(_) => html(404, NOT_FOUND),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// busybox httpd's content types by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html",
        Some("txt" | "text") => "text/plain",
        Some("css") => "text/css",
        Some("js") => "application/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "image/svg+xml",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}

/// `nc -l [-k] -p PORT -e cat` (or `-e /bin/cat`): an echo server on PORT. Other forms of
/// `nc` are not supported (exit 1).
pub(super) async fn nc(p: &mut FakeProcess, args: &[String]) -> i32 {
    let (mut listening, mut port, mut program) = (false, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-p" => port = args.next().and_then(|v| parse_port(v)),
            "-e" => program = args.next().cloned(),
            flags if flags.starts_with('-') => {
                listening |= flags.contains('l');
                if flags.ends_with('p') && flags.len() > 2 {
                    port = args.next().and_then(|v| parse_port(v));
                }
            }
            _ => {}
        }
    }
    let echo = program
        .as_deref()
        .is_some_and(|prog| prog.rsplit('/').next() == Some("cat"));
    match (listening, port) {
        (true, Some(port)) if echo => listen(p, "nc", port, echo_server()).await,
        _ => {
            let _ = p
                .eprint("nc: only `nc -l -p PORT -e cat` is supported\n")
                .await;
            1
        }
    }
}
