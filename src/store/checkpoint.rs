//! Signed checkpoints of the hash chain (S25, decision 0015): the format, and the check that a
//! log still extends a checkpoint an auditor kept.
//!
//! A checkpoint says "the record at `seq` had hash `hash`", signed with Ed25519 by a key the
//! vault holds (signing lives in [`crate::checkpoints`]; this module needs only public keys).
//! Since every record's hash covers its `prev_hash`, the hash at `seq` pins every record at or
//! before it: whoever rewrites a middle record and recomputes every later hash, or cuts the
//! tail, no longer matches a checkpoint taken before, and cannot sign a new one without the
//! vault's key.
//!
//! The signed message is the canonical JSON ([`crate::canonical`]: keys sorted, no whitespace)
//! of `{"format","hash","key_id","seq","time"}` with the checkpoint's values; see
//! [`signed_message`] and decision 0015 for an auditor's own implementation.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{EventLog, GENESIS_HASH, StoreError};

/// The `format` of every checkpoint this version writes (part of the signed message).
pub const CHECKPOINT_FORMAT: &str = "agp-checkpoint-v1";

/// A signed statement of the chain's hash at one sequence. Printed by `agp audit checkpoint`,
/// appended to `--checkpoint-file`, POSTed to `--checkpoint-webhook`, read back by
/// `agp audit verify --checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The certified record's sequence (0: the empty log, certified as [`GENESIS_HASH`]).
    pub seq: u64,
    /// That record's `hash` (hex SHA-256).
    pub hash: String,
    /// When it was signed, RFC 3339 UTC. Signed as written.
    pub time: String,
    /// First 8 bytes of SHA-256 of the public key, hex: names the key.
    pub key_id: String,
    /// The Ed25519 public key, hex (32 bytes).
    pub public_key: String,
    /// The Ed25519 signature of [`signed_message`], hex (64 bytes).
    pub signature: String,
}

/// Why a checkpoint is refused before the log is even looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unknown checkpoint format {0:?} (expected {CHECKPOINT_FORMAT:?})")]
    Format(String),
    #[error("public_key is not 32 bytes of hex, or not an Ed25519 point")]
    PublicKey,
    #[error("key_id {found} does not match the public key (its id is {expected})")]
    KeyId { found: String, expected: String },
    #[error("signed by key {found}, not by the trusted key {trusted}")]
    Untrusted { found: String, trusted: String },
    #[error("signature is not 64 bytes of hex")]
    Malformed,
    #[error("bad signature: the checkpoint was not signed by its key as written")]
    Bad,
}

/// The id of an Ed25519 public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The exact bytes an Ed25519 signature of a checkpoint covers.
pub fn signed_message(format: &str, seq: u64, hash: &str, time: &str, key_id: &str) -> Vec<u8> {
    let body = json!({
        "format": format,
        "hash": hash,
        "key_id": key_id,
        "seq": seq,
        "time": time,
    });
    let mut out = Vec::with_capacity(192);
    crate::canonical::write_canonical(&body, &mut out);
    out
}

impl Checkpoint {
    /// The message this checkpoint's signature must cover.
    pub fn message(&self) -> Vec<u8> {
        signed_message(&self.format, self.seq, &self.hash, &self.time, &self.key_id)
    }

    /// Checks format, key id and signature; with `trusted` (a hex public key), also that it is
    /// the signing key.
    pub fn check_signature(&self, trusted: Option<&str>) -> Result<(), SignatureError> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(SignatureError::Format(self.format.clone()));
        }
        let public: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::PublicKey)?;
        let expected = key_id(&public);
        if expected != self.key_id {
            return Err(SignatureError::KeyId {
                found: self.key_id.clone(),
                expected,
            });
        }
        if let Some(trusted) = trusted
            && !trusted.eq_ignore_ascii_case(&self.public_key)
        {
            let trusted_id = hex::decode(trusted)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map_or_else(|| "(not a key)".to_string(), |k| key_id(&k));
            return Err(SignatureError::Untrusted {
                found: self.key_id.clone(),
                trusted: trusted_id,
            });
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| SignatureError::PublicKey)?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::Malformed)?;
        key.verify_strict(&self.message(), &Signature::from_bytes(&signature))
            .map_err(|_| SignatureError::Bad)
    }
}

/// Reads checkpoints from text: one JSON object, JSON lines (what `--checkpoint-file` holds),
/// concatenated objects, or arrays of them.
pub fn parse_checkpoints(text: &str) -> Result<Vec<Checkpoint>, String> {
    let mut out = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let value = value.map_err(|e| format!("checkpoint {} is not JSON: {e}", i + 1))?;
        let items = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        for item in items {
            let n = out.len() + 1;
            let cp = serde_json::from_value(item)
                .map_err(|e| format!("checkpoint {n} is not a checkpoint: {e}"))?;
            out.push(cp);
        }
    }
    if out.is_empty() {
        return Err("no checkpoint found".into());
    }
    Ok(out)
}

/// What checking one checkpoint against the log found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointCheck {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub key_id: String,
    /// True when the signature holds and the log still has `hash` at `seq`.
    pub valid: bool,
    /// The first missing or changed event this checkpoint reveals; `None` when valid or when
    /// the checkpoint itself was refused (bad signature).
    pub first_bad_seq: Option<u64>,
    pub reason: Option<String>,
}

/// Checks every checkpoint against `log` (signature, then the record at its seq). `trusted`
/// pins the signing key (hex). A mismatch is reported with the last checkpoint below it that
/// still holds, which bounds where the rewrite starts.
pub fn check_checkpoints<L: EventLog + ?Sized>(
    log: &L,
    checkpoints: &[Checkpoint],
    trusted: Option<&str>,
) -> Result<Vec<CheckpointCheck>, StoreError> {
    let head = log.head();
    let mut out: Vec<CheckpointCheck> = Vec::with_capacity(checkpoints.len());
    for cp in checkpoints {
        let mut check = CheckpointCheck {
            seq: cp.seq,
            hash: cp.hash.clone(),
            time: cp.time.clone(),
            key_id: cp.key_id.clone(),
            valid: false,
            first_bad_seq: None,
            reason: None,
        };
        if let Err(e) = cp.check_signature(trusted) {
            check.reason = Some(format!("checkpoint refused: {e}"));
            out.push(check);
            continue;
        }
        let found = stored_hash(log, cp.seq, head)?;
        match found {
            Stored::Hash(h) if h == cp.hash => check.valid = true,
            Stored::Hash(h) => {
                check.first_bad_seq = Some(cp.seq);
                check.reason = Some(format!(
                    "the record at seq {seq} has hash {h}, the checkpoint certifies {want}: an \
                     event at or before seq {seq} was changed or removed{after}",
                    seq = cp.seq,
                    want = cp.hash,
                    after = last_good_below(&out, cp.seq)
                        .map(|s| format!(" (after seq {s}, which a checkpoint still certifies)"))
                        .unwrap_or_default(),
                ));
            }
            Stored::Missing(seq, why) => {
                check.first_bad_seq = Some(seq);
                check.reason = Some(why);
            }
        }
        out.push(check);
    }
    Ok(out)
}

enum Stored {
    Hash(String),
    /// The first seq that is missing or unreadable, and why.
    Missing(u64, String),
}

fn stored_hash<L: EventLog + ?Sized>(log: &L, seq: u64, head: u64) -> Result<Stored, StoreError> {
    if seq == 0 {
        return Ok(Stored::Hash(GENESIS_HASH.to_string()));
    }
    if head < seq {
        return Ok(Stored::Missing(
            head + 1,
            format!(
                "the log ends at seq {head}, the checkpoint certifies seq {seq}: events {} to \
                 {seq} are missing (the tail was cut)",
                head + 1
            ),
        ));
    }
    match log.read_all(seq, 1) {
        Ok(records) => Ok(match records.into_iter().next() {
            Some(r) if r.seq == seq => Stored::Hash(r.hash),
            _ => Stored::Missing(seq, format!("the record at seq {seq} is missing")),
        }),
        Err(StoreError::Corrupt { seq: bad, reason }) => Ok(Stored::Missing(
            bad,
            format!("the record at seq {bad} is unreadable: {reason}"),
        )),
        Err(e) => Err(e),
    }
}

/// The highest seq below `seq` that an already checked checkpoint found intact.
fn last_good_below(done: &[CheckpointCheck], seq: u64) -> Option<u64> {
    done.iter()
        .filter(|c| c.valid && c.seq < seq)
        .map(|c| c.seq)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_message_is_canonical_json_of_five_fields() {
        let m = signed_message(CHECKPOINT_FORMAT, 7, "ab", "2026-01-01T00:00:00Z", "0011");
        assert_eq!(
            String::from_utf8(m).expect("utf8"),
            r#"{"format":"agp-checkpoint-v1","hash":"ab","key_id":"0011","seq":7,"time":"2026-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn parses_one_object_json_lines_and_arrays() {
        let cp = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            seq: 1,
            hash: "h".into(),
            time: "t".into(),
            key_id: "k".into(),
            public_key: "p".into(),
            signature: "s".into(),
        };
        let one = serde_json::to_string_pretty(&cp).expect("json");
        assert_eq!(parse_checkpoints(&one).expect("one").len(), 1);
        let line = serde_json::to_string(&cp).expect("json");
        let lines = format!("{line}\n{line}\n\n{line}\n");
        assert_eq!(parse_checkpoints(&lines).expect("lines").len(), 3);
        let array = serde_json::to_string(&vec![cp.clone(), cp]).expect("json");
        assert_eq!(parse_checkpoints(&array).expect("array").len(), 2);
        assert!(parse_checkpoints("").is_err());
        assert!(parse_checkpoints("{\"seq\": 1}").is_err());
    }
}
