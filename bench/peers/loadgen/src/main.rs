//! Closed-loop HTTP/1.1 load generator for bench/peers (std only, so it builds offline).
//!
//!   loadgen post   --url http://127.0.0.1:8000/classify --bodies bodies.jsonl \
//!                  --connections 32 --seconds 10
//!   loadgen stream --url http://127.0.0.1:8000/v1/completions --bodies bodies.jsonl \
//!                  --connections 16 --requests 2
//!
//! Each connection is one thread holding one keep-alive connection and sending its next
//! request as soon as the previous answer ended (closed loop, like wrk). Connection c sends
//! the bodies c, c + C, c + 2C, ... of the JSON-lines file, so every server gets the same
//! requests in the same order.
//!
//! `post`: runs for --seconds; latency is request sent -> whole response read.
//! `stream`: every connection sends --requests streamed (SSE) requests; time to first token
//! is request sent -> first `data:` event; tokens are the `completion_tokens` of the usage
//! chunk (`stream_options: {"include_usage": true}`) or, without one, the `data:` events
//! other than `[DONE]`. The SSE bytes are scanned, not parsed as JSON: on a 2-core machine
//! the client must cost little next to the server.
//!
//! Prints one JSON line of totals (and percentiles in milliseconds) on stdout.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Args {
    mode: String,
    host: String,
    path: String,
    bodies: Vec<String>,
    connections: usize,
    seconds: f64,
    requests: usize,
    header: Vec<String>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>, // seconds, one per completed request
    ttfts: Vec<f64>,
    stream_rates: Vec<f64>, // tokens/s of each stream (after its first token)
    tokens: u64,
    events: u64,
    errors: u64,
    statuses: Vec<u16>, // non-200 statuses seen (first few)
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen post|stream --url URL --bodies FILE.jsonl --connections N \
         [--seconds S] [--requests R] [--header 'Name: value']..."
    );
    process::exit(2)
}

fn parse_args() -> Args {
    let mut it = env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    if mode != "post" && mode != "stream" {
        usage()
    }
    let (mut url, mut bodies_file) = (String::new(), String::new());
    let (mut connections, mut seconds, mut requests) = (1usize, 5.0f64, 1usize);
    let mut header = Vec::new();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => url = value,
            "--bodies" => bodies_file = value,
            "--connections" => connections = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage()),
            "--requests" => requests = value.parse().unwrap_or_else(|_| usage()),
            "--header" => header.push(value),
            _ => usage(),
        }
    }
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage());
    let (host, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    };
    let text = std::fs::read_to_string(&bodies_file).unwrap_or_else(|e| {
        eprintln!("{bodies_file}: {e}");
        process::exit(2)
    });
    let bodies: Vec<String> =
        text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    if bodies.is_empty() || connections == 0 {
        usage()
    }
    Args { mode, host, path, bodies, connections, seconds, requests, header }
}

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(host: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        Ok(Conn { reader: BufReader::with_capacity(64 * 1024, stream) })
    }

    fn send(&mut self, args: &Args, body: &str) -> io::Result<()> {
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            args.path,
            args.host,
            body.len()
        );
        for h in &args.header {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.reader.get_mut().write_all(req.as_bytes())
    }

    /// Status line and headers -> (status, content-length, chunked, close).
    fn head(&mut self) -> io::Result<(u16, Option<usize>, bool, bool)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                match name.as_str() {
                    "content-length" => length = value.parse().ok(),
                    "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        Ok((status, length, chunked, close))
    }

    /// Reads the body, handing every piece of it to `on_data` as it arrives.
    fn body(
        &mut self,
        length: Option<usize>,
        chunked: bool,
        on_data: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        if chunked {
            let mut line = String::new();
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size_text = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    // trailers, then the empty line
                    loop {
                        line.clear();
                        self.reader.read_line(&mut line)?;
                        if line.trim().is_empty() {
                            return Ok(());
                        }
                    }
                }
                self.read_exact_into(size, on_data)?;
                line.clear();
                self.reader.read_line(&mut line)?; // CRLF after the chunk
            }
        } else if let Some(n) = length {
            self.read_exact_into(n, on_data)
        } else {
            // until the server closes
            let mut buf = [0u8; 16384];
            loop {
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                on_data(&buf[..n]);
            }
        }
    }

    fn read_exact_into(&mut self, mut n: usize, on_data: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in body"));
            }
            let take = available.len().min(n);
            on_data(&available[..take]);
            self.reader.consume(take);
            n -= take;
        }
        Ok(())
    }
}

/// Scans SSE bytes: counts `data:` events, notes the first one's time and the last usage.
struct SseScan {
    line: Vec<u8>,
    events: u64,
    first: Option<Instant>,
    usage_tokens: Option<u64>,
}

impl SseScan {
    fn new() -> SseScan {
        SseScan { line: Vec::with_capacity(512), events: 0, first: None, usage_tokens: None }
    }

    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                self.end_line();
            } else if b != b'\r' {
                self.line.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        if let Some(payload) = self.line.strip_prefix(b"data:") {
            let payload = trim_ascii(payload);
            if payload != b"[DONE]" {
                let usage_only = contains(payload, b"\"choices\":[]");
                if let Some(tokens) = number_after(payload, b"\"completion_tokens\":") {
                    self.usage_tokens = Some(tokens);
                }
                if !usage_only {
                    self.events += 1;
                    if self.first.is_none() {
                        self.first = Some(Instant::now());
                    }
                }
            }
        }
        self.line.clear();
    }
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &s[start..end]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let i = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = hay[i..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn connection_loop(args: &Args, c: usize, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut conn: Option<Conn> = None;
    let mut i = 0usize;
    loop {
        if args.mode == "post" && Instant::now() >= deadline {
            break;
        }
        if args.mode == "stream" && i >= args.requests {
            break;
        }
        let body = &args.bodies[(c + i * args.connections) % args.bodies.len()];
        i += 1;
        if conn.is_none() {
            match Conn::open(&args.host) {
                Ok(x) => conn = Some(x),
                Err(_) => {
                    tally.errors += 1;
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let cx = conn.as_mut().unwrap();
        let t0 = Instant::now();
        let mut scan = SseScan::new();
        let result = (|| -> io::Result<(u16, bool)> {
            cx.send(args, body)?;
            let (status, length, chunked, close) = cx.head()?;
            if args.mode == "stream" {
                cx.body(length, chunked, &mut |d| scan.feed(d))?;
            } else {
                cx.body(length, chunked, &mut |_| {})?;
            }
            Ok((status, close))
        })();
        let elapsed = t0.elapsed().as_secs_f64();
        match result {
            Ok((200, close)) => {
                if args.mode == "post" && Instant::now() > deadline {
                    // finished after the deadline: not counted, as wrk does not either
                } else {
                    tally.latencies.push(elapsed);
                }
                if args.mode == "stream" {
                    let tokens = scan.usage_tokens.unwrap_or(scan.events);
                    tally.tokens += tokens;
                    tally.events += scan.events;
                    if let Some(first) = scan.first {
                        let ttft = first.duration_since(t0).as_secs_f64();
                        tally.ttfts.push(ttft);
                        if tokens > 1 && elapsed > ttft {
                            tally.stream_rates.push((tokens - 1) as f64 / (elapsed - ttft));
                        }
                    }
                }
                if close {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                tally.errors += 1;
                if tally.statuses.len() < 4 {
                    tally.statuses.push(status);
                }
                conn = None;
            }
            Err(_) => {
                tally.errors += 1;
                conn = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".to_string()
    }
}

fn main() {
    let args = Arc::new(parse_args());
    let start = Instant::now();
    let handles: Vec<_> = (0..args.connections)
        .map(|c| {
            let args = Arc::clone(&args);
            thread::spawn(move || connection_loop(&args, c, start))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().expect("a connection thread panicked");
        all.latencies.extend(t.latencies);
        all.ttfts.extend(t.ttfts);
        all.stream_rates.extend(t.stream_rates);
        all.tokens += t.tokens;
        all.events += t.events;
        all.errors += t.errors;
        all.statuses.extend(t.statuses);
    }
    let seconds = if args.mode == "post" { args.seconds } else { start.elapsed().as_secs_f64() };
    let ms = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (percentile(v, 50.0) * 1e3, percentile(v, 99.0) * 1e3)
    };
    let (p50, p99) = ms(&mut all.latencies);
    let (ttft50, ttft99) = ms(&mut all.ttfts);
    let per_stream = if all.stream_rates.is_empty() {
        f64::NAN
    } else {
        all.stream_rates.iter().sum::<f64>() / all.stream_rates.len() as f64
    };
    let statuses: Vec<String> = all.statuses.iter().map(u16::to_string).collect();
    println!(
        "{{\"mode\": \"{}\", \"connections\": {}, \"requests\": {}, \"errors\": {}, \
         \"error_statuses\": [{}], \"seconds\": {}, \"rps\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \
         \"tokens\": {}, \"events\": {}, \"tok_s\": {}, \"ttft_p50_ms\": {}, \"ttft_p99_ms\": {}, \
         \"per_stream_tok_s\": {}}}",
        args.mode,
        args.connections,
        all.latencies.len(),
        all.errors,
        statuses.join(", "),
        json_num(seconds),
        json_num(all.latencies.len() as f64 / seconds),
        json_num(p50),
        json_num(p99),
        all.tokens,
        all.events,
        json_num(all.tokens as f64 / seconds),
        json_num(ttft50),
        json_num(ttft99),
        json_num(per_stream),
    );
}
