//! The daemon's request decoder: any bytes a local client can send as one line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server's line codec hands over UTF-8 only (other bytes close the
    // connection before parsing); feed lossy text so every input reaches the parser.
    let line = String::from_utf8_lossy(data);
    if let Ok(req) = banger_rpc::server::parse_request(&line) {
        assert!(!req.op_id.is_empty() && req.op_id.len() <= 64);
    }
});
