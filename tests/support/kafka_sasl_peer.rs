//! A one-broker Kafka peer behind TLS that insists on SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
//! before Metadata and Produce, speaking the versions rskafka 0.6 negotiates, and recording
//! the records it is sent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BufMut;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::BoxError;

/// The API keys and the one version of each that the peer speaks: the highest rskafka 0.6
/// asks for, so that it is exercised as it talks to a current broker.
const API_VERSIONS: (i16, i16) = (18, 3);
const SASL_HANDSHAKE: (i16, i16) = (17, 1);
const SASL_AUTHENTICATE: (i16, i16) = (36, 2);
const METADATA: (i16, i16) = (3, 4);
const PRODUCE: (i16, i16) = (0, 7);

// Kafka error codes.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;

/// The largest request the peer reads; rskafka's produce requests stay far below.
const MAX_FRAME: usize = 16 << 20;
/// Kafka's minimum for SCRAM credentials (and RFC 7677's recommendation).
const SCRAM_ITERATIONS: u32 = 4096;
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// One record as it arrived, with the login of the connection that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducedRecord {
    pub mechanism: String,
    pub user: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Seen {
    records: Vec<ProducedRecord>,
    /// `(mechanism, user, accepted)` for every completed login attempt.
    logins: Vec<(String, String, bool)>,
    /// API keys of requests refused because their connection had not logged in.
    refused: Vec<i16>,
}

pub struct KafkaSaslPeer {
    addr: SocketAddr,
    ca_file: PathBuf,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for KafkaSaslPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the peer knows of its one user, stored the way a broker stores SCRAM credentials:
/// salted and hashed, never the password (PLAIN alone needs that).
struct Credentials {
    user: String,
    password: String,
    topic: String,
    scram: Vec<(Hash, ScramCredential)>,
}

struct ScramCredential {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl KafkaSaslPeer {
    /// Listens on a loopback port with a certificate for 127.0.0.1 from a throw-away CA
    /// (written to [`Self::ca_file`]), for one `user` with `password` and one `topic` of one
    /// partition.
    pub async fn start(user: &str, password: &str, topic: &str) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own, so that another peer's CA is a stranger, not a namesake whose
        // signature fails.
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Kafka SASL test peer CA {}", server_nonce()),
        );
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem())?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let mut scram = Vec::new();
        for hash in [Hash::Sha256, Hash::Sha512] {
            scram.push((hash, ScramCredential::new(hash, password)?));
        }
        let credentials = Arc::new(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            topic: topic.to_owned(),
            scram,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, credentials, seen) = (
                    acceptor.clone(),
                    Arc::clone(&credentials),
                    Arc::clone(&shared),
                );
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up in the handshake.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, addr, &credentials, &seen).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            ca_file,
            seen,
            task,
            _dir: dir,
        })
    }

    /// `host:port`, as `KAFKA_BROKERS` takes it.
    pub fn broker(&self) -> String {
        self.addr.to_string()
    }

    /// The PEM file of the CA that signed the peer's certificate.
    pub fn ca_file(&self) -> String {
        self.ca_file.to_string_lossy().into_owned()
    }

    pub fn records(&self) -> Vec<ProducedRecord> {
        self.seen().records.clone()
    }

    pub fn logins(&self) -> Vec<(String, String, bool)> {
        self.seen().logins.clone()
    }

    pub fn refused(&self) -> Vec<i16> {
        self.seen().refused.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A poisoned lock only means a connection task panicked; what it recorded stands.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a connection is in its login.
enum Login {
    Start,
    Handshaken(String),
    /// SCRAM's first round is done; the client's proof comes next.
    Challenged {
        hash: Hash,
        mechanism: String,
        user: String,
        /// The header the client's `c=` must repeat, then `client-first-message-bare ","
        /// server-first-message`, the start of the AuthMessage.
        gs2_header: String,
        auth_start: String,
        nonce: String,
    },
    Done {
        mechanism: String,
        user: String,
    },
}

/// What to do after a request.
enum Reply {
    Send(Vec<u8>),
    /// Kafka answers a failed login and then closes the connection.
    SendAndClose(Vec<u8>),
    Close,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    credentials: &Credentials,
    seen: &Mutex<Seen>,
) -> Result<(), BoxError> {
    let mut login = Login::Start;
    loop {
        let size = match stream.read_i32().await {
            Ok(size) => usize::try_from(size)?,
            Err(_) => return Ok(()),
        };
        if size > MAX_FRAME {
            return Err(format!("a request of {size} bytes").into());
        }
        let mut frame = vec![0; size];
        stream.read_exact(&mut frame).await?;
        let mut request = Reader(&frame);
        let api = (request.i16()?, request.i16()?);
        let correlation_id = request.i32()?;
        let _client_id = request.nullable_string()?;
        let flexible = matches!(api, API_VERSIONS | SASL_AUTHENTICATE);
        if flexible {
            request.tagged_fields()?;
        }
        let reply = match (&login, api) {
            (_, API_VERSIONS) => Reply::Send(api_versions()),
            (Login::Start, SASL_HANDSHAKE) => {
                let mechanism = request.string()?;
                let known = MECHANISMS.contains(&mechanism.as_str());
                let mut body = Vec::new();
                body.put_i16(if known { 0 } else { UNSUPPORTED_SASL_MECHANISM });
                body.put_i32(MECHANISMS.len() as i32);
                for name in MECHANISMS {
                    put_string(&mut body, name);
                }
                if known {
                    login = Login::Handshaken(mechanism);
                }
                Reply::Send(body)
            }
            (_, SASL_AUTHENTICATE) => {
                let token = request.compact_bytes()?;
                let (next, reply) = authenticate(
                    std::mem::replace(&mut login, Login::Start),
                    &token,
                    credentials,
                    seen,
                );
                login = next;
                reply
            }
            (Login::Done { .. }, METADATA) => {
                Reply::Send(metadata(&mut request, addr, credentials)?)
            }
            (Login::Done { mechanism, user }, PRODUCE) => {
                Reply::Send(produce(&mut request, credentials, mechanism, user, seen)?)
            }
            (_, METADATA | PRODUCE) => {
                // As Kafka does: a request other than the login on a connection that has not
                // logged in ends the connection.
                lock(seen).refused.push(api.0);
                Reply::Close
            }
            _ => Reply::Close,
        };
        let (body, close) = match reply {
            Reply::Send(body) => (body, false),
            Reply::SendAndClose(body) => (body, true),
            Reply::Close => return Ok(()),
        };
        let mut frame = Vec::with_capacity(body.len() + 9);
        // Response header v1 (with tagged fields) for flexible versions, except ApiVersions,
        // whose response header stays v0 so that any client can read it.
        let header_len = if api == SASL_AUTHENTICATE { 5 } else { 4 };
        frame.put_i32(i32::try_from(header_len + body.len())?);
        frame.put_i32(correlation_id);
        if api == SASL_AUTHENTICATE {
            frame.put_u8(0);
        }
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await?;
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// ApiVersions v3: every API the peer speaks, each in its one version.
fn api_versions() -> Vec<u8> {
    let apis = [
        API_VERSIONS,
        SASL_HANDSHAKE,
        SASL_AUTHENTICATE,
        METADATA,
        PRODUCE,
    ];
    let mut body = Vec::new();
    body.put_i16(0);
    put_uvarint(&mut body, apis.len() as u64 + 1);
    for (key, version) in apis {
        body.put_i16(key);
        body.put_i16(version);
        body.put_i16(version);
        body.put_u8(0);
    }
    body.put_i32(0);
    body.put_u8(0);
    body
}

/// One SaslAuthenticate round: the next state and the answer (v2).
fn authenticate(
    login: Login,
    token: &[u8],
    credentials: &Credentials,
    seen: &Mutex<Seen>,
) -> (Login, Reply) {
    let refuse = |mechanism: &str, user: &str, state: i16| {
        if state == SASL_AUTHENTICATION_FAILED {
            lock(seen)
                .logins
                .push((mechanism.to_owned(), user.to_owned(), false));
        }
        let message = format!("Authentication failed with SASL mechanism {mechanism}");
        (
            Login::Start,
            Reply::SendAndClose(sasl_answer(state, Some(&message), b"")),
        )
    };
    let text = String::from_utf8_lossy(token).into_owned();
    match login {
        Login::Handshaken(mechanism) if mechanism == "PLAIN" => {
            // authzid NUL authcid NUL passwd (RFC 4616).
            let mut parts = text.split('\0');
            let (_, user, password) = (parts.next(), parts.next(), parts.next());
            let user = user.unwrap_or_default();
            if user == credentials.user && password == Some(credentials.password.as_str()) {
                accepted(mechanism, user, Vec::new(), seen)
            } else {
                refuse(&mechanism, user, SASL_AUTHENTICATION_FAILED)
            }
        }
        Login::Handshaken(mechanism) => {
            let hash = if mechanism == "SCRAM-SHA-512" {
                Hash::Sha512
            } else {
                Hash::Sha256
            };
            match scram_first(&text) {
                Some((gs2_header, bare, user, client_nonce)) if user == credentials.user => {
                    let Some(credential) = credentials.scram(hash) else {
                        return refuse(&mechanism, &user, SASL_AUTHENTICATION_FAILED);
                    };
                    let nonce = format!("{client_nonce}{}", server_nonce());
                    let server_first = format!(
                        "r={nonce},s={},i={SCRAM_ITERATIONS}",
                        BASE64.encode(&credential.salt)
                    );
                    let reply = Reply::Send(sasl_answer(0, None, server_first.as_bytes()));
                    let auth_start = format!("{bare},{server_first}");
                    (
                        Login::Challenged {
                            hash,
                            mechanism,
                            user,
                            gs2_header,
                            auth_start,
                            nonce,
                        },
                        reply,
                    )
                }
                Some((_, _, user, _)) => refuse(&mechanism, &user, SASL_AUTHENTICATION_FAILED),
                None => refuse(&mechanism, "", SASL_AUTHENTICATION_FAILED),
            }
        }
        Login::Challenged {
            hash,
            mechanism,
            user,
            gs2_header,
            auth_start,
            nonce,
        } => {
            let signature = credentials.scram(hash).and_then(|credential| {
                let (without_proof, proof) = text.rsplit_once(",p=")?;
                let mut fields = without_proof.split(',');
                let binding = fields.next()?.strip_prefix("c=")?;
                let echoed = fields.next()?.strip_prefix("r=")?;
                if BASE64.decode(binding).ok()? != gs2_header.as_bytes() || echoed != nonce {
                    return None;
                }
                let proof = BASE64.decode(proof).ok()?;
                let auth_message = format!("{auth_start},{without_proof}");
                let client_signature = hash.hmac(&credential.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return None;
                }
                // ClientKey = ClientProof XOR ClientSignature; it must hash to StoredKey.
                let client_key: Vec<u8> = proof
                    .iter()
                    .zip(&client_signature)
                    .map(|(p, s)| p ^ s)
                    .collect();
                (hash.digest(&client_key) == credential.stored_key)
                    .then(|| hash.hmac(&credential.server_key, auth_message.as_bytes()))
            });
            match signature {
                Some(signature) => {
                    let server_final = format!("v={}", BASE64.encode(signature));
                    accepted(mechanism, &user, server_final.into_bytes(), seen)
                }
                None => refuse(&mechanism, &user, SASL_AUTHENTICATION_FAILED),
            }
        }
        Login::Start => refuse("(none)", "", ILLEGAL_SASL_STATE),
        Login::Done { mechanism, user } => refuse(&mechanism, &user, ILLEGAL_SASL_STATE),
    }
}

fn accepted(mechanism: String, user: &str, token: Vec<u8>, seen: &Mutex<Seen>) -> (Login, Reply) {
    lock(seen)
        .logins
        .push((mechanism.clone(), user.to_owned(), true));
    let reply = Reply::Send(sasl_answer(0, None, &token));
    (
        Login::Done {
            mechanism,
            user: user.to_owned(),
        },
        reply,
    )
}

/// SaslAuthenticate v2's response body.
fn sasl_answer(error: i16, message: Option<&str>, token: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(error);
    match message {
        Some(message) => {
            put_uvarint(&mut body, message.len() as u64 + 1);
            body.extend_from_slice(message.as_bytes());
        }
        None => body.put_u8(0),
    }
    put_uvarint(&mut body, token.len() as u64 + 1);
    body.extend_from_slice(token);
    // session_lifetime_ms: 0, the session does not expire.
    body.put_i64(0);
    body.put_u8(0);
    body
}

/// The parts of a SCRAM client-first-message (RFC 5802 section 7): its GS2 header, the bare
/// message, the user name (`=2C` and `=3D` decoded) and the client's nonce. Channel binding is
/// not offered over this listener, so `p=` is refused.
fn scram_first(message: &str) -> Option<(String, String, String, String)> {
    let (flag, rest) = message.split_once(',')?;
    if flag != "n" && flag != "y" {
        return None;
    }
    let (authzid, bare) = rest.split_once(',')?;
    let gs2_header = format!("{flag},{authzid},");
    let mut user = None;
    let mut nonce = None;
    for field in bare.split(',') {
        if let Some(name) = field.strip_prefix("n=") {
            user = Some(name.replace("=2C", ",").replace("=3D", "="));
        } else if let Some(value) = field.strip_prefix("r=") {
            nonce = Some(value.to_owned());
        }
    }
    Some((gs2_header, bare.to_owned(), user?, nonce?))
}

fn server_nonce() -> String {
    let mut bytes = [0u8; 18];
    // aws-lc-rs's generator; a nonce that cannot be made leaves the login to fail.
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes);
    BASE64.encode(bytes)
}

/// Metadata v4: the peer is the one broker and the leader of the topic's one partition.
fn metadata(
    request: &mut Reader<'_>,
    addr: SocketAddr,
    credentials: &Credentials,
) -> Result<Vec<u8>, BoxError> {
    let asked: Option<Vec<String>> = match request.i32()? {
        -1 => None,
        n => Some((0..n).map(|_| request.string()).collect::<Result<_, _>>()?),
    };
    let topics = asked.unwrap_or_else(|| vec![credentials.topic.clone()]);
    let mut body = Vec::new();
    body.put_i32(0);
    body.put_i32(1);
    body.put_i32(0);
    put_string(&mut body, &addr.ip().to_string());
    body.put_i32(i32::from(addr.port()));
    body.put_i16(-1);
    put_string(&mut body, "kafka-sasl-peer");
    body.put_i32(0);
    body.put_i32(i32::try_from(topics.len())?);
    for topic in &topics {
        let ours = *topic == credentials.topic;
        body.put_i16(if ours { 0 } else { UNKNOWN_TOPIC_OR_PARTITION });
        put_string(&mut body, topic);
        body.put_u8(0);
        if ours {
            body.put_i32(1);
            body.put_i16(0);
            body.put_i32(0);
            body.put_i32(0);
            for _nodes in ["replicas", "in-sync replicas"] {
                body.put_i32(1);
                body.put_i32(0);
            }
        } else {
            body.put_i32(0);
        }
    }
    Ok(body)
}

/// Produce v7: records the batches' records and answers their base offsets.
fn produce(
    request: &mut Reader<'_>,
    credentials: &Credentials,
    mechanism: &str,
    user: &str,
    seen: &Mutex<Seen>,
) -> Result<Vec<u8>, BoxError> {
    let _transactional_id = request.nullable_string()?;
    let _acks = request.i16()?;
    let _timeout_ms = request.i32()?;
    let mut body = Vec::new();
    let topics = request.i32()?;
    body.put_i32(topics);
    for _ in 0..topics {
        let topic = request.string()?;
        put_string(&mut body, &topic);
        let partitions = request.i32()?;
        body.put_i32(partitions);
        for _ in 0..partitions {
            let index = request.i32()?;
            let size = usize::try_from(request.i32()?)?;
            let mut batches = Reader(request.take(size)?);
            let mut records = Vec::new();
            let mut error = if topic == credentials.topic && index == 0 {
                0
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            };
            while error == 0 && !batches.0.is_empty() {
                match record_batch(&mut batches)? {
                    Some(batch) => records.extend(batch),
                    None => error = UNSUPPORTED_COMPRESSION_TYPE,
                }
            }
            let mut seen = lock(seen);
            let base_offset = i64::try_from(seen.records.len())?;
            if error == 0 {
                seen.records
                    .extend(
                        records
                            .into_iter()
                            .map(|(key, value, headers)| ProducedRecord {
                                mechanism: mechanism.to_owned(),
                                user: user.to_owned(),
                                key,
                                value,
                                headers,
                            }),
                    );
            }
            body.put_i32(index);
            body.put_i16(error);
            body.put_i64(if error == 0 { base_offset } else { -1 });
            body.put_i64(-1);
            body.put_i64(0);
        }
    }
    body.put_i32(0);
    Ok(body)
}

type Fields = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// The records of one RecordBatch (magic 2), or `None` when it is compressed.
fn record_batch(input: &mut Reader<'_>) -> Result<Option<Vec<Fields>>, BoxError> {
    let _base_offset = input.i64()?;
    let length = usize::try_from(input.i32()?)?;
    let mut batch = Reader(input.take(length)?);
    let _leader_epoch = batch.i32()?;
    let magic = batch.i8()?;
    if magic != 2 {
        return Err(format!("record batch magic {magic}").into());
    }
    let _crc = batch.i32()?;
    let attributes = batch.i16()?;
    if attributes & 0x07 != 0 {
        return Ok(None);
    }
    // lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence.
    batch.take(4 + 8 + 8 + 8 + 2 + 4)?;
    let count = batch.i32()?;
    let mut records = Vec::new();
    for _ in 0..count {
        let length = usize::try_from(batch.varint()?)?;
        let mut record = Reader(batch.take(length)?);
        let _attributes = record.i8()?;
        let _timestamp_delta = record.varint()?;
        let _offset_delta = record.varint()?;
        let key = record.varint_bytes()?;
        let value = record.varint_bytes()?;
        let mut headers = Vec::new();
        for _ in 0..record.varint()? {
            let name = record.varint_bytes()?.unwrap_or_default();
            let value = record.varint_bytes()?.unwrap_or_default();
            headers.push((String::from_utf8(name)?, value));
        }
        records.push((key, value, headers));
    }
    Ok(Some(records))
}

/// The SCRAM hashes, each with its HMAC and PBKDF2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            // HMAC takes a key of any length, so this never fails.
            let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => mac::<Hmac<Sha256>>(key, data),
            Self::Sha512 => mac::<Hmac<Sha512>>(key, data),
        }
    }

    /// SaltedPassword := Hi(password, salt, i), which is PBKDF2 with this hash's HMAC.
    fn salted(self, password: &str, salt: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, SCRAM_ITERATIONS)
                    .to_vec()
            }
            Self::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password.as_bytes(), salt, SCRAM_ITERATIONS)
                    .to_vec()
            }
        }
    }
}

impl ScramCredential {
    fn new(hash: Hash, password: &str) -> Result<Self, BoxError> {
        let mut salt = vec![0u8; 16];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut salt)
            .map_err(|_| "no random bytes for a salt")?;
        let salted = hash.salted(password, &salt);
        Ok(Self {
            stored_key: hash.digest(&hash.hmac(&salted, b"Client Key")),
            server_key: hash.hmac(&salted, b"Server Key"),
            salt,
        })
    }
}

impl Credentials {
    fn scram(&self, hash: Hash) -> Option<&ScramCredential> {
        self.scram.iter().find(|(h, _)| *h == hash).map(|(_, c)| c)
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.put_i16(i16::try_from(text.len()).unwrap_or(i16::MAX));
    out.extend_from_slice(text.as_bytes());
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Kafka's primitive types, read from the front of a request.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if n > self.0.len() {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()).into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BoxError> {
        Ok(self.take(N)?.try_into()?)
    }

    fn i8(&mut self) -> Result<i8, BoxError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, BoxError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, BoxError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, BoxError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uvarint(&mut self) -> Result<u64, BoxError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.array::<1>()?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 64 bits".into())
    }

    /// A zig-zag varint (records' lengths and deltas).
    fn varint(&mut self) -> Result<i64, BoxError> {
        let raw = self.uvarint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// Bytes after a zig-zag varint length, -1 for null.
    fn varint_bytes(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        match self.varint()? {
            -1 => Ok(None),
            n => Ok(Some(self.take(usize::try_from(n)?)?.to_vec())),
        }
    }

    fn string(&mut self) -> Result<String, BoxError> {
        let n = usize::try_from(self.i16()?)?;
        Ok(String::from_utf8(self.take(n)?.to_vec())?)
    }

    fn nullable_string(&mut self) -> Result<Option<String>, BoxError> {
        match self.i16()? {
            -1 => Ok(None),
            n => Ok(Some(String::from_utf8(
                self.take(usize::try_from(n)?)?.to_vec(),
            )?)),
        }
    }

    fn compact_bytes(&mut self) -> Result<Vec<u8>, BoxError> {
        let n = usize::try_from(self.uvarint()?)?
            .checked_sub(1)
            .ok_or("null where bytes were expected")?;
        Ok(self.take(n)?.to_vec())
    }

    fn tagged_fields(&mut self) -> Result<(), BoxError> {
        for _ in 0..self.uvarint()? {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?)?;
            self.take(size)?;
        }
        Ok(())
    }
}
