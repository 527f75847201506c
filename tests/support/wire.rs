//! The small part of the MySQL client/server protocol a test double speaks: packets
//! (split at 16 MiB), the greeting, the login with mysql_native_password (no TLS), OK,
//! ERR and text result sets. Shared by the ProxySQL stand-in (`proxysql`) and the fleet
//! simulator (`fleet`).

use sha1::{Digest, Sha1};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CLIENT_LONG_PASSWORD: u32 = 0x1;
pub const CLIENT_FOUND_ROWS: u32 = 0x2;
pub const CLIENT_LONG_FLAG: u32 = 0x4;
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub const CLIENT_IGNORE_SPACE: u32 = 0x100;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_INTERACTIVE: u32 = 0x400;
pub const CLIENT_SSL: u32 = 0x800;
pub const CLIENT_TRANSACTIONS: u32 = 0x2000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;

/// What the greeting offers; CLIENT_DEPRECATE_EOF deliberately absent.
pub const SERVER_CAPABILITIES: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_SSL
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// SERVER_STATUS_AUTOCOMMIT | SERVER_STATUS_NO_BACKSLASH_ESCAPES.
pub const STATUS_FLAGS: u16 = 0x0202;
pub const UTF8_GENERAL_CI: u8 = 33;
pub const MYSQL_TYPE_VAR_STRING: u8 = 0xfd;
pub const NATIVE_PASSWORD: &str = "mysql_native_password";

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_PING: u8 = 0x0e;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;

/// Packets to send as one write, numbered from the sequence id the exchange is at.
pub struct Outgoing {
    bytes: Vec<u8>,
    seq: u8,
}

impl Outgoing {
    pub fn new(seq: u8) -> Outgoing {
        Outgoing {
            bytes: Vec::new(),
            seq,
        }
    }

    pub fn packet(&mut self, payload: &[u8]) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(0xff_ffff);
            let len = (n as u32).to_le_bytes();
            self.bytes
                .extend_from_slice(&[len[0], len[1], len[2], self.seq]);
            self.bytes.extend_from_slice(&rest[..n]);
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < 0xff_ffff {
                break;
            }
        }
    }

    pub async fn send(self, stream: &mut TcpStream) -> io::Result<u8> {
        stream.write_all(&self.bytes).await?;
        Ok(self.seq)
    }
}

/// One logical packet (joined if split at 16 MiB) and the sequence id of its last part.
pub async fn read_packet(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let start = payload.len();
        payload.resize(start + len, 0);
        stream.read_exact(&mut payload[start..]).await?;
        if len < 0xff_ffff {
            return Ok((header[3], payload));
        }
    }
}

pub fn put_lenenc_int(buf: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => buf.push(n as u8),
        251..=0xffff => {
            buf.push(0xfc);
            buf.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            buf.push(0xfd);
            buf.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xfe);
            buf.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn put_lenenc_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_lenenc_int(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

pub fn ok_payload(affected_rows: u64) -> Vec<u8> {
    ok_payload_then(affected_rows, false)
}

/// An OK of one statement of several; `more`: another result follows.
pub fn ok_payload_then(affected_rows: u64, more: bool) -> Vec<u8> {
    let status = if more {
        STATUS_FLAGS | MORE_RESULTS
    } else {
        STATUS_FLAGS
    };
    let mut p = vec![0x00];
    put_lenenc_int(&mut p, affected_rows);
    put_lenenc_int(&mut p, 0); // last insert id
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes()); // warnings
    p
}

pub fn err_payload(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(sqlstate.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

pub fn eof_payload() -> Vec<u8> {
    eof_with(STATUS_FLAGS)
}

/// SERVER_MORE_RESULTS_EXISTS: another result set of the same query follows.
pub const MORE_RESULTS: u16 = 0x0008;

fn eof_with(status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0]; // no warnings
    p.extend_from_slice(&status.to_le_bytes());
    p
}

pub fn column_payload(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    put_lenenc_bytes(&mut p, b"def");
    for part in ["", "", ""] {
        put_lenenc_bytes(&mut p, part.as_bytes()); // schema, table, original table
    }
    put_lenenc_bytes(&mut p, name.as_bytes());
    put_lenenc_bytes(&mut p, b""); // original name
    p.push(0x0c);
    p.extend_from_slice(&u16::from(UTF8_GENERAL_CI).to_le_bytes());
    p.extend_from_slice(&255u32.to_le_bytes()); // column length
    p.push(MYSQL_TYPE_VAR_STRING);
    p.extend_from_slice(&0u16.to_le_bytes()); // flags
    p.push(0); // decimals
    p.extend_from_slice(&[0, 0]);
    p
}

/// 20 printable bytes (never NUL, which would end the scramble early).
pub fn nonce() -> [u8; 20] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = time
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut out = [0u8; 20];
    for byte in &mut out {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = 0x21 + (x % 94) as u8;
    }
    out
}

/// The mysql_native_password token: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))).
pub fn native_token(password: &str, nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mut hasher = Sha1::new();
    hasher.update(nonce);
    hasher.update(stage2);
    let mix = hasher.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

pub fn greeting(server_version: &str, connection_id: u32, nonce: &[u8; 20]) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(server_version.as_bytes());
    p.push(0);
    p.extend_from_slice(&connection_id.to_le_bytes());
    p.extend_from_slice(&nonce[..8]);
    p.push(0);
    p.extend_from_slice(&(SERVER_CAPABILITIES as u16).to_le_bytes());
    p.push(UTF8_GENERAL_CI);
    p.extend_from_slice(&0x0002u16.to_le_bytes()); // autocommit
    p.extend_from_slice(&((SERVER_CAPABILITIES >> 16) as u16).to_le_bytes());
    p.push(21); // auth plugin data length, NUL included
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&nonce[8..]);
    p.push(0);
    p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    p.push(0);
    p
}

/// What a HandshakeResponse41 says.
pub struct Login {
    pub capabilities: u32,
    pub user: String,
    pub token: Vec<u8>,
    pub plugin: Option<String>,
}

pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    pub fn nul_terminated(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        self.at += end + 1;
        Some(&rest[..end])
    }

    pub fn lenenc(&mut self) -> Option<usize> {
        let first = *self.take(1)?.first()?;
        let n = match first {
            0..=250 => u64::from(first),
            0xfc => u64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)),
            0xfd => {
                let b = self.take(3)?;
                u64::from(u32::from_le_bytes([b[0], b[1], b[2], 0]))
            }
            0xfe => u64::from_le_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        usize::try_from(n).ok()
    }
}

pub fn parse_login(payload: &[u8]) -> Option<Login> {
    let mut cursor = Cursor {
        bytes: payload,
        at: 0,
    };
    let capabilities = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?);
    if capabilities & CLIENT_SSL != 0 {
        // An SSLRequest (32 bytes) or a response claiming TLS: refused by the caller.
        return Some(Login {
            capabilities,
            user: String::new(),
            token: Vec::new(),
            plugin: None,
        });
    }
    cursor.take(4 + 1 + 23)?; // max packet, character set, filler
    let user = String::from_utf8_lossy(cursor.nul_terminated()?).into_owned();
    let token = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let n = cursor.lenenc()?;
        cursor.take(n)?.to_vec()
    } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let n = usize::from(*cursor.take(1)?.first()?);
        cursor.take(n)?.to_vec()
    } else {
        cursor.nul_terminated()?.to_vec()
    };
    if capabilities & CLIENT_CONNECT_WITH_DB != 0 {
        cursor.nul_terminated(); // the schema, ignored like ProxySQL's admin does
    }
    let plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        cursor
            .nul_terminated()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    } else {
        None
    };
    Some(Login {
        capabilities,
        user,
        token,
        plugin,
    })
}

/// A text result set: the column count, the columns, EOF, the rows, EOF.
pub fn rows_packets(out: &mut Outgoing, columns: &[String], rows: &[Vec<Option<Vec<u8>>>]) {
    result_set(out, &Columns::named(columns), rows, false);
}

/// The column definitions of a result set, encoded once: a simulator answering
/// thousands of probes a second sends the same ones again and again.
pub struct Columns(Vec<Vec<u8>>);

impl Columns {
    pub fn named<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Columns {
        Columns(
            names
                .into_iter()
                .map(|name| column_payload(name.as_ref()))
                .collect(),
        )
    }
}

/// A text result set of a query of several statements; `more`: another follows (its
/// last EOF says SERVER_MORE_RESULTS_EXISTS).
pub fn result_set<V: AsRef<[u8]>>(
    out: &mut Outgoing,
    columns: &Columns,
    rows: &[Vec<Option<V>>],
    more: bool,
) {
    let mut count = Vec::new();
    put_lenenc_int(&mut count, columns.0.len() as u64);
    out.packet(&count);
    for column in &columns.0 {
        out.packet(column);
    }
    out.packet(&eof_payload());
    let mut p = Vec::new();
    for row in rows {
        p.clear();
        for value in row {
            match value {
                Some(bytes) => put_lenenc_bytes(&mut p, bytes.as_ref()),
                None => p.push(0xfb),
            }
        }
        out.packet(&p);
    }
    let status = if more {
        STATUS_FLAGS | MORE_RESULTS
    } else {
        STATUS_FLAGS
    };
    out.packet(&eof_with(status));
}

/// The client's mysql_native_password token: the one it logged in with, or, when it
/// used another plugin, the one it sends after an AuthSwitchRequest to this one. Returns
/// the token and the sequence id to answer with.
pub async fn native_password_token(
    stream: &mut TcpStream,
    login: Login,
    nonce: &[u8; 20],
    seq: u8,
) -> io::Result<(Vec<u8>, u8)> {
    if login.plugin.as_deref().is_none_or(|p| p == NATIVE_PASSWORD) {
        return Ok((login.token, seq));
    }
    let mut switch = vec![0xfe];
    switch.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    switch.push(0);
    switch.extend_from_slice(nonce);
    switch.push(0);
    let mut out = Outgoing::new(seq);
    out.packet(&switch);
    out.send(stream).await?;
    let (switched_seq, switched) = read_packet(stream).await?;
    Ok((switched, switched_seq.wrapping_add(1)))
}
