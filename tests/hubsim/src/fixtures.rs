//! Declarative fixture specs (Rust builder and TOML) and their materialisation into repos,
//! commits and files with every hash a client may check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::Error;

/// Kind of repository, as in the Hub's URL prefixes (`""`, `datasets/`, `spaces/`, `kernels/`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// A model repo (`/api/models/...`, no URL prefix).
    #[default]
    Model,
    /// A dataset repo (`/api/datasets/...`, `datasets/` prefix).
    Dataset,
    /// A space repo (`/api/spaces/...`, `spaces/` prefix).
    Space,
    /// A kernel repo (`/api/kernels/...`, `kernels/` prefix).
    Kernel,
}

impl RepoKind {
    /// Plural used in API URLs: `models`, `datasets`, `spaces`.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
            RepoKind::Space => "spaces",
            RepoKind::Kernel => "kernels",
        }
    }

    /// Prefix used in resolve URLs: `""`, `datasets/`, `spaces/`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
            RepoKind::Space => "spaces/",
            RepoKind::Kernel => "kernels/",
        }
    }

    pub(crate) fn from_plural(s: &str) -> Option<Self> {
        match s {
            "models" => Some(RepoKind::Model),
            "datasets" => Some(RepoKind::Dataset),
            "spaces" => Some(RepoKind::Space),
            "kernels" => Some(RepoKind::Kernel),
            _ => None,
        }
    }
}

/// How a file is stored on the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// A plain git blob, served by the Hub origin itself.
    #[default]
    Regular,
    /// A Git LFS object, served by the CDN origin (`/lfs/<sha256>`).
    Lfs,
    /// A Xet-backed file: in the CAS, and on the CDN as a bridge (`/xet-bridge/<xet hash>`).
    Xet,
}

/// Deterministic file content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Content {
    /// Literal UTF-8 text.
    Text {
        /// The text.
        text: String,
    },
    /// Seeded pseudo-random (incompressible) bytes, optionally with patched regions.
    Random {
        /// Size in bytes.
        size: u64,
        /// Seed.
        seed: u64,
        /// Regions overwritten with other seeded bytes (to model a changed file).
        #[serde(default)]
        patches: Vec<Patch>,
    },
    /// Seeded compressible bytes (little-endian f32 values of small magnitude, like weights).
    Compressible {
        /// Size in bytes.
        size: u64,
        /// Seed.
        seed: u64,
    },
    /// Highly compressible bytes: zeros with a seeded 8-byte value every 4 KiB, so every Xet
    /// chunk is distinct (no dedup) yet compresses about 100x: the worst case for the memory a
    /// client spends decoding (a small wire feed decodes to many bytes).
    Sparse {
        /// Size in bytes.
        size: u64,
        /// Seed.
        seed: u64,
    },
    /// A valid safetensors file shaped like a real checkpoint: a JSON header, then 55% bf16
    /// weights (rows of normal values, each row its own scale, calibrated against trained
    /// weights: the CAS compresses them as it does those), 15% bf16 weights of another layer, 15% fp32 norms around 1.0, 15%
    /// incompressible bytes (quantization scales, packed data). Patches overwrite regions of
    /// the data (not the header) with other seeded weights, to model a fine-tune or a revision.
    Safetensors {
        /// Size in bytes (header included).
        size: u64,
        /// Seed.
        seed: u64,
        /// Regions of the file overwritten with other seeded bf16 weights.
        #[serde(default)]
        patches: Vec<Patch>,
    },
    /// Real trained weights: the file `member` of the wheel that the pinned `requirement`
    /// (`name==version`) has on PyPI ([`crate::trained`]); with `bf16`, its fp32 tensors
    /// rounded to bf16 and written as a safetensors file.
    Trained {
        /// The pinned package, `name==version`.
        requirement: String,
        /// The path of the file inside the wheel.
        member: String,
        /// Rewrite the fp32 tensors as a bf16 safetensors file.
        #[serde(default)]
        bf16: bool,
    },
}

/// A region of a [`Content::Random`] file overwritten with bytes from another seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Patch {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Seed of the replacement bytes.
    pub seed: u64,
}

/// One file in a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSpec {
    /// Repo-relative path (not validated: the traversal fixture uses hostile names).
    pub path: String,
    /// Storage kind.
    #[serde(default)]
    pub storage: Storage,
    /// Content.
    pub content: Content,
}

/// One commit: changes applied on top of the previous commit of the repo.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CommitSpec {
    /// Commit title.
    #[serde(default)]
    pub message: String,
    /// Files added or replaced.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Paths deleted.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// One repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoSpec {
    /// `owner/name`.
    pub id: String,
    /// Repo type.
    #[serde(default, rename = "type")]
    pub kind: RepoKind,
    /// Needs `Authorization: Bearer <token>` for everything; otherwise 401 RepoNotFound.
    #[serde(default)]
    pub private: bool,
    /// Metadata is public; file downloads and xet tokens need the token (401 GatedRepo).
    #[serde(default)]
    pub gated: bool,
    /// Linear history, oldest first.
    pub commits: Vec<CommitSpec>,
    /// Branch name -> commit index. Default: `main` -> last commit.
    #[serde(default)]
    pub branches: BTreeMap<String, usize>,
    /// Tag name -> commit index.
    #[serde(default)]
    pub tags: BTreeMap<String, usize>,
    /// Pull-request number N (`refs/pr/N`) -> commit index.
    #[serde(default)]
    pub prs: BTreeMap<u32, usize>,
}

/// A whole fixture set. TOML form: `[[repos]]` tables (see the README).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FixtureSpec {
    /// Repositories.
    #[serde(default)]
    pub repos: Vec<RepoSpec>,
}

const MIB: u64 = 1024 * 1024;

fn text(path: &str, t: impl Into<String>) -> FileSpec {
    FileSpec {
        path: path.into(),
        storage: Storage::Regular,
        content: Content::Text { text: t.into() },
    }
}

fn random(path: &str, storage: Storage, size: u64, seed: u64) -> FileSpec {
    FileSpec {
        path: path.into(),
        storage,
        content: Content::Random {
            size,
            seed,
            patches: vec![],
        },
    }
}

impl FixtureSpec {
    /// Parse a TOML spec.
    pub fn from_toml(s: &str) -> Result<Self, Error> {
        toml::from_str(s).map_err(|e| Error::Spec(e.to_string()))
    }

    /// Add a repo (builder style).
    pub fn repo(mut self, repo: RepoSpec) -> Self {
        self.repos.push(repo);
        self
    }

    /// A minimal set for fast tests: `acme/tiny` only (see [`FixtureSpec::tiny_repo`]).
    pub fn minimal() -> Self {
        FixtureSpec {
            repos: vec![Self::tiny_repo()],
        }
    }

    /// The default set: `acme/tiny`, `acme/evolving`, `acme/many-small` (dataset), `acme/private`,
    /// `acme/gated`, `acme/space` (space), `acme/big` (`big_mib` MiB, Xet) and `evil/traversal`.
    pub fn default_set(big_mib: u64) -> Self {
        let evolving = RepoSpec {
            id: "acme/evolving".into(),
            kind: RepoKind::Model,
            private: false,
            gated: false,
            commits: vec![
                CommitSpec {
                    message: "v1 of the weights".into(),
                    files: vec![
                        text("config.json", "{\"version\": 1}\n"),
                        random("model.bin", Storage::Xet, 24 * MIB, 2001),
                    ],
                    delete: vec![],
                },
                CommitSpec {
                    message: "v2: 3 MiB of the weights changed".into(),
                    files: vec![
                        text("config.json", "{\"version\": 2}\n"),
                        FileSpec {
                            path: "model.bin".into(),
                            storage: Storage::Xet,
                            content: Content::Random {
                                size: 24 * MIB,
                                seed: 2001,
                                patches: vec![Patch {
                                    offset: 10 * MIB,
                                    len: 3 * MIB,
                                    seed: 2002,
                                }],
                            },
                        },
                    ],
                    delete: vec![],
                },
            ],
            branches: BTreeMap::new(),
            tags: [("v1".to_string(), 0)].into(),
            prs: BTreeMap::new(),
        };
        let mut small = vec![text(
            "README.md",
            "# many-small\n\nA dataset of many small files.\n",
        )];
        for i in 0..300u64 {
            let len = 64 + (i * 37) % 1900;
            small.push(FileSpec {
                path: format!("data/part-{:02}/file-{i:04}.txt", i / 50),
                storage: Storage::Regular,
                content: Content::Random {
                    size: len,
                    seed: 5000 + i,
                    patches: vec![],
                },
            });
        }
        let many_small = RepoSpec {
            id: "acme/many-small".into(),
            kind: RepoKind::Dataset,
            private: false,
            gated: false,
            commits: vec![CommitSpec {
                message: "add data".into(),
                files: small,
                delete: vec![],
            }],
            branches: BTreeMap::new(),
            tags: BTreeMap::new(),
            prs: BTreeMap::new(),
        };
        let simple = |id: &str, kind: RepoKind, files: Vec<FileSpec>| RepoSpec {
            id: id.into(),
            kind,
            private: false,
            gated: false,
            commits: vec![CommitSpec {
                message: "initial commit".into(),
                files,
                delete: vec![],
            }],
            branches: BTreeMap::new(),
            tags: BTreeMap::new(),
            prs: BTreeMap::new(),
        };
        let mut private = simple(
            "acme/private",
            RepoKind::Model,
            vec![
                text("config.json", "{\"private\": true}\n"),
                random("weights.bin", Storage::Lfs, MIB, 3001),
                random("xet.bin", Storage::Xet, MIB + 12345, 3002),
            ],
        );
        private.private = true;
        let mut gated = simple(
            "acme/gated",
            RepoKind::Model,
            vec![
                text("config.json", "{\"gated\": true}\n"),
                random("model.bin", Storage::Xet, MIB, 3101),
            ],
        );
        gated.gated = true;
        let space = simple(
            "acme/space",
            RepoKind::Space,
            vec![
                text("README.md", "---\nsdk: gradio\n---\n# a space\n"),
                text(
                    "app.py",
                    "import gradio as gr\n\ngr.Interface(lambda x: x, 'text', 'text').launch()\n",
                ),
                text("requirements.txt", "gradio\n"),
            ],
        );
        let big = simple(
            "acme/big",
            RepoKind::Model,
            vec![
                text("config.json", "{\"big\": true}\n"),
                random("big.bin", Storage::Xet, big_mib * MIB, 4001),
            ],
        );
        let traversal = simple(
            "evil/traversal",
            RepoKind::Model,
            vec![
                text("ok.txt", "fine\n"),
                text("../../evil", "escaped two levels\n"),
                text("/abs/path", "absolute\n"),
                text("sub/../../x", "escaped via sub\n"),
            ],
        );
        FixtureSpec {
            repos: vec![
                Self::tiny_repo(),
                evolving,
                many_small,
                private,
                gated,
                space,
                big,
                traversal,
            ],
        }
    }

    /// `acme/tiny`: commits c0..c3; `main` -> c1, `dev/feature` -> c2, tag `v1.0` -> c0,
    /// `refs/pr/1` -> c3. Files at `main`: `README.md`, `config.json`, `sub/dir/notes.txt`,
    /// `lfs.bin` (LFS, 4 MiB), `xet-a.bin` (Xet, 3 MiB random), `w.safetensors` (Xet, 4 MiB
    /// compressible).
    /// `acme/trained`: real trained weights from pinned wheels on PyPI ([`Content::Trained`],
    /// all Xet, about 33 MB): RapidOCR's three fp32 ONNX models (`ocr/`), Silero VAD's fp32 and
    /// fp16 ONNX models and its safetensors (`vad/`), and `model.bf16.safetensors` and
    /// `det.bf16.safetensors`, the OCR models' fp32 tensors rounded to bf16 (trained bf16
    /// weights, what the realistic generator is calibrated against), with a `config.json`.
    pub fn trained_set() -> Self {
        use crate::trained::{RAPIDOCR, SILERO_VAD};
        let wheel = |path: &str, requirement: &str, member: &str, bf16: bool| FileSpec {
            path: path.into(),
            storage: Storage::Xet,
            content: Content::Trained {
                requirement: requirement.into(),
                member: member.into(),
                bf16,
            },
        };
        let ocr = |m: &str| format!("rapidocr_onnxruntime/models/{m}");
        let vad = |m: &str| format!("silero_vad/data/{m}");
        let files = vec![
            text(
                "config.json",
                "{\"source\": \"trained weights from pinned wheels on PyPI\"}\n",
            ),
            wheel(
                "ocr/det.onnx",
                RAPIDOCR,
                &ocr("ch_PP-OCRv4_det_infer.onnx"),
                false,
            ),
            wheel(
                "ocr/rec.onnx",
                RAPIDOCR,
                &ocr("ch_PP-OCRv4_rec_infer.onnx"),
                false,
            ),
            wheel(
                "ocr/cls.onnx",
                RAPIDOCR,
                &ocr("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                false,
            ),
            wheel(
                "vad/silero_vad.onnx",
                SILERO_VAD,
                &vad("silero_vad.onnx"),
                false,
            ),
            wheel(
                "vad/silero_vad_half.onnx",
                SILERO_VAD,
                &vad("silero_vad_half.onnx"),
                false,
            ),
            wheel(
                "vad/silero_vad_16k.safetensors",
                SILERO_VAD,
                &vad("silero_vad_16k.safetensors"),
                false,
            ),
            wheel(
                "model.bf16.safetensors",
                RAPIDOCR,
                &ocr("ch_PP-OCRv4_rec_infer.onnx"),
                true,
            ),
            wheel(
                "det.bf16.safetensors",
                RAPIDOCR,
                &ocr("ch_PP-OCRv4_det_infer.onnx"),
                true,
            ),
        ];
        FixtureSpec {
            repos: vec![RepoSpec {
                id: "acme/trained".into(),
                kind: RepoKind::Model,
                private: false,
                gated: false,
                commits: vec![CommitSpec {
                    message: "trained weights".into(),
                    files,
                    delete: vec![],
                }],
                branches: BTreeMap::new(),
                tags: BTreeMap::new(),
                prs: BTreeMap::new(),
            }],
        }
    }

    /// Shapes of real checkpoints (all Xet, all safetensors as in [`Content::Safetensors`]):
    /// - `acme/realistic`: one `model.safetensors` of `big_mib` MiB and a `config.json`;
    /// - `acme/sharded`: 8 shards of `big_mib / 8` MiB, `model.safetensors.index.json`,
    ///   `config.json` and a tokenizer-sized `tokenizer.json`;
    /// - content shared the way the Hub sees it (`S` = `big_mib` clamped to 1..=32 MiB):
    ///   `acme/finetune` (tag `v1`, then `S/16` changed in the middle of an `S` file),
    ///   `acme/shared-base` (`a.safetensors`, `b.safetensors`) and `acme/shared-derived` (`a`
    ///   identical, `b` with `S/32` changed), and `acme/shared-pair` (two files of `5S/8` that
    ///   differ in `S/32`).
    pub fn realistic_set(big_mib: u64) -> Self {
        let st = |path: &str, size: u64, seed: u64, patches: Vec<Patch>| FileSpec {
            path: path.into(),
            storage: Storage::Xet,
            content: Content::Safetensors {
                size,
                seed,
                patches,
            },
        };
        let model = |id: &str, commits: Vec<CommitSpec>, tags: BTreeMap<String, usize>| RepoSpec {
            id: id.into(),
            kind: RepoKind::Model,
            private: false,
            gated: false,
            commits,
            branches: BTreeMap::new(),
            tags,
            prs: BTreeMap::new(),
        };
        let commit = |message: &str, files: Vec<FileSpec>| CommitSpec {
            message: message.into(),
            files,
            delete: vec![],
        };
        let big = big_mib.max(1) * MIB;
        let shard = (big / 8).max(256 * 1024);
        let share = big_mib.clamp(1, 32) * MIB;
        let changed = |at: u64, len: u64, seed: u64| {
            vec![Patch {
                offset: at,
                len,
                seed,
            }]
        };
        let config = text(
            "config.json",
            "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096, \"torch_dtype\": \"bfloat16\"}\n",
        );
        let mut shards = Vec::new();
        let mut weight_map = serde_json::Map::new();
        for i in 0..8u64 {
            let name = format!("model-{:05}-of-00008.safetensors", i + 1);
            weight_map.insert(
                format!("model.layers.{i}.mlp.down_proj.weight"),
                name.clone().into(),
            );
            shards.push(st(&name, shard, 7010 + i, vec![]));
        }
        let index = serde_json::json!({
            "metadata": { "total_size": shard * 8 },
            "weight_map": weight_map,
        });
        shards.push(text("model.safetensors.index.json", format!("{index:#}\n")));
        shards.push(config.clone());
        // A tokenizer.json-sized vocabulary (real ones are 2-10 MB; scaled with the shards).
        let vocab_len = (shard / 64).clamp(16 * 1024, 2 * MIB);
        let mut vocab = String::from("{\"model\": {\"type\": \"BPE\", \"vocab\": {");
        let mut i = 0u64;
        while (vocab.len() as u64) < vocab_len {
            vocab.push_str(&format!("\"tok{i:x}\": {i}, "));
            i += 1;
        }
        vocab.push_str("\"<eos>\": 0}}}\n");
        shards.push(text("tokenizer.json", vocab));
        FixtureSpec {
            repos: vec![
                model(
                    "acme/realistic",
                    vec![commit(
                        "weights",
                        vec![config.clone(), st("model.safetensors", big, 7001, vec![])],
                    )],
                    BTreeMap::new(),
                ),
                model(
                    "acme/sharded",
                    vec![commit("8 shards", shards)],
                    BTreeMap::new(),
                ),
                model(
                    "acme/finetune",
                    vec![
                        commit("v1", vec![st("w.safetensors", share, 7100, vec![])]),
                        commit(
                            "v2: a few MiB of the weights changed",
                            vec![st(
                                "w.safetensors",
                                share,
                                7100,
                                changed(share / 2, share / 16, 7101),
                            )],
                        ),
                    ],
                    [("v1".to_string(), 0)].into(),
                ),
                model(
                    "acme/shared-base",
                    vec![commit(
                        "base",
                        vec![
                            st("a.safetensors", share, 7200, vec![]),
                            st("b.safetensors", share, 7300, vec![]),
                        ],
                    )],
                    BTreeMap::new(),
                ),
                model(
                    "acme/shared-derived",
                    vec![commit(
                        "a identical to the base's, b fine-tuned",
                        vec![
                            st("a.safetensors", share, 7200, vec![]),
                            st(
                                "b.safetensors",
                                share,
                                7300,
                                changed(share / 4, share / 32, 7301),
                            ),
                        ],
                    )],
                    BTreeMap::new(),
                ),
                model(
                    "acme/shared-pair",
                    vec![commit(
                        "two near-identical files",
                        vec![
                            st("x.safetensors", share * 5 / 8, 7400, vec![]),
                            st(
                                "y.safetensors",
                                share * 5 / 8,
                                7400,
                                changed(share / 4, share / 32, 7401),
                            ),
                        ],
                    )],
                    BTreeMap::new(),
                ),
            ],
        }
    }

    /// This set with `other`'s repositories added.
    #[must_use]
    pub fn with(mut self, other: FixtureSpec) -> Self {
        self.repos.extend(other.repos);
        self
    }

    pub fn tiny_repo() -> RepoSpec {
        RepoSpec {
            id: "acme/tiny".into(),
            kind: RepoKind::Model,
            private: false,
            gated: false,
            commits: vec![
                CommitSpec {
                    message: "initial commit".into(),
                    files: vec![
                        text("README.md", "# tiny\n"),
                        text("config.json", "{\"hidden_size\": 8}\n"),
                    ],
                    delete: vec![],
                },
                CommitSpec {
                    message: "add weights".into(),
                    files: vec![
                        text("config.json", "{\"hidden_size\": 16, \"layers\": 2}\n"),
                        text("sub/dir/notes.txt", "nested notes\n".repeat(20)),
                        random("lfs.bin", Storage::Lfs, 4 * MIB, 1001),
                        random("xet-a.bin", Storage::Xet, 3 * MIB + 777, 1002),
                        FileSpec {
                            path: "w.safetensors".into(),
                            storage: Storage::Xet,
                            content: Content::Compressible {
                                size: 4 * MIB,
                                seed: 1003,
                            },
                        },
                    ],
                    delete: vec![],
                },
                CommitSpec {
                    message: "feature work".into(),
                    files: vec![
                        text("config.json", "{\"hidden_size\": 32}\n"),
                        text("feature.txt", "on a branch\n"),
                    ],
                    delete: vec![],
                },
                CommitSpec {
                    message: "pr change".into(),
                    files: vec![text("pr.txt", "proposed\n")],
                    delete: vec![],
                },
            ],
            branches: [("main".to_string(), 1), ("dev/feature".to_string(), 2)].into(),
            tags: [("v1.0".to_string(), 0)].into(),
            prs: [(1, 3)].into(),
        }
    }
}

/// SplitMix64: tiny, fast, deterministic.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn fill_random(buf: &mut [u8], seed: u64) {
    let mut rng = SplitMix(seed);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = rng.next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

impl Content {
    /// The bytes (generated, or read out of a wheel for [`Content::Trained`]).
    pub fn generate(&self) -> Result<Vec<u8>, Error> {
        Ok(match self {
            Content::Trained {
                requirement,
                member,
                bf16,
            } => {
                let bytes = crate::trained::member(requirement, member)?;
                if *bf16 {
                    crate::trained::bf16_safetensors(&crate::trained::float_tensors(
                        member, &bytes,
                    )?)
                } else {
                    bytes
                }
            }
            Content::Text { text } => text.as_bytes().to_vec(),
            Content::Random {
                size,
                seed,
                patches,
            } => {
                let mut v = vec![0u8; *size as usize];
                fill_random(&mut v, *seed);
                for p in patches {
                    let start = (p.offset as usize).min(v.len());
                    let end = (p.offset.saturating_add(p.len) as usize).min(v.len());
                    fill_random(&mut v[start..end], p.seed);
                }
                v
            }
            Content::Safetensors {
                size,
                seed,
                patches,
            } => safetensors(*size, *seed, patches),
            Content::Sparse { size, seed } => {
                let mut v = vec![0u8; *size as usize];
                let mut rng = SplitMix(*seed);
                for at in (0..v.len()).step_by(4096) {
                    let r = rng.next().to_le_bytes();
                    let n = r.len().min(v.len() - at);
                    v[at..at + n].copy_from_slice(&r[..n]);
                }
                v
            }
            Content::Compressible { size, seed } => {
                let mut v = Vec::with_capacity(*size as usize + 4);
                let mut rng = SplitMix(*seed);
                while v.len() < *size as usize {
                    let r = rng.next();
                    // Small normal-ish floats: the high bytes repeat, which BG4+LZ4 exploits.
                    let x = ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v.truncate(*size as usize);
                v
            }
        })
    }
}

/// Normally distributed bf16 values (mean `mean`, std `std`), little-endian, into `out`.
fn fill_bf16(out: &mut [u8], seed: u64, mean: f32, std: f32) {
    let mut rng = SplitMix(seed);
    let mut pairs = out.chunks_exact_mut(4);
    for pair in &mut pairs {
        // Box-Muller: two normals from two uniforms.
        let r = rng.next();
        let u1 = ((r >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
        let u2 = ((r & 0xFF_FFFF) as f32) / (1u64 << 24) as f32;
        let m = (-2.0 * u1.ln()).sqrt();
        let (a, b) = (
            m * (std::f32::consts::TAU * u2).cos(),
            m * (std::f32::consts::TAU * u2).sin(),
        );
        let bf = |x: f32| ((mean + std * x).to_bits() >> 16) as u16;
        pair[..2].copy_from_slice(&bf(a).to_le_bytes());
        pair[2..].copy_from_slice(&bf(b).to_le_bytes());
    }
    for b in pairs.into_remainder() {
        *b = 0;
    }
}

/// Normally distributed f32 values (mean `mean`, std `std`), little-endian, into `out`.
fn fill_f32(out: &mut [u8], seed: u64, mean: f32, std: f32) {
    let mut rng = SplitMix(seed);
    let mut words = out.chunks_exact_mut(4);
    for w in &mut words {
        let r = rng.next();
        let u1 = ((r >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
        let u2 = ((r & 0xFF_FFFF) as f32) / (1u64 << 24) as f32;
        let x = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        w.copy_from_slice(&(mean + std * x).to_le_bytes());
    }
    for b in words.into_remainder() {
        *b = 0;
    }
}

/// The bytes of [`Content::Safetensors`].
fn safetensors(size: u64, seed: u64, patches: &[Patch]) -> Vec<u8> {
    // (name, dtype, share of the data in percent)
    const TENSORS: [(&str, &str, u64); 4] = [
        ("model.embed_tokens.weight", "BF16", 55),
        ("model.layers.0.mlp.down_proj.weight", "BF16", 15),
        ("model.layers.0.input_layernorm.weight", "F32", 15),
        ("model.layers.0.mlp.down_proj.qscale", "U8", 15),
    ];
    let header_for = |lens: &[u64]| {
        let mut map = serde_json::Map::new();
        map.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut at = 0u64;
        for ((name, dtype, _), len) in TENSORS.iter().zip(lens) {
            let elem = match *dtype {
                "BF16" => 2,
                "F32" => 4,
                _ => 1,
            };
            map.insert(
                (*name).into(),
                serde_json::json!({ "dtype": dtype, "shape": [len / elem], "data_offsets": [at, at + len] }),
            );
            at += len;
        }
        let mut text = serde_json::Value::Object(map).to_string();
        // Padded with spaces to a multiple of 8, as writers do.
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        text
    };
    // The header's length depends on the numbers in it: size it with the final lengths.
    let mut header_len = header_for(&[0, 0, 0, 0]).len() as u64 + 64;
    let mut lens = [0u64; 4];
    let mut header = String::new();
    for _ in 0..4 {
        let data = size.saturating_sub(8 + header_len);
        let mut left = data;
        for (i, (_, dtype, share)) in TENSORS.iter().enumerate() {
            let elem = if *dtype == "F32" {
                4
            } else if *dtype == "BF16" {
                2
            } else {
                1
            };
            let len = if i == TENSORS.len() - 1 {
                left
            } else {
                data * share / 100 / elem * elem
            };
            lens[i] = len;
            left -= len;
        }
        header = header_for(&lens);
        if header.len() as u64 == header_len {
            break;
        }
        header_len = header.len() as u64;
    }
    let mut v = Vec::with_capacity(size as usize);
    v.extend_from_slice(&(header.len() as u64).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    let data_start = v.len();
    v.resize(size as usize, 0);
    let mut at = data_start;
    for (i, len) in lens.iter().enumerate() {
        let part = &mut v[at..at + *len as usize];
        let s = seed.wrapping_mul(31).wrapping_add(i as u64);
        match i {
            0 | 1 => fill_weights(part, s),
            2 => fill_f32(part, s, 1.0, 0.05),
            _ => fill_random(part, s),
        }
        at += *len as usize;
    }
    for p in patches {
        let start = (p.offset as usize).clamp(data_start, v.len());
        let end = (p.offset.saturating_add(p.len) as usize).clamp(start, v.len());
        fill_weights(&mut v[start..end], p.seed);
    }
    v
}

/// Bytes of a row of bf16 weights in [`fill_weights`] (1024 values, a hidden size).
const WEIGHT_ROW: usize = 2048;

/// bf16 weights as trained layers have them: rows of [`WEIGHT_ROW`] bytes, each normal with
/// its own scale (std log-uniform between 0.01 and 0.05). Calibrated against real trained
/// weights (`Content::Trained` with `bf16`): the CAS's chunk compression makes of them what it
/// makes of those (the test `the_generator_compresses_like_trained_bf16_weights`); one scale for
/// the whole tensor compresses a few points better than trained weights do.
fn fill_weights(out: &mut [u8], seed: u64) {
    let mut rng = SplitMix(seed ^ 0x5CA1E);
    for (i, row) in out.chunks_mut(WEIGHT_ROW).enumerate() {
        let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
        let std = 0.01 * 5f32.powf(u);
        fill_bf16(row, seed.wrapping_add(i as u64), 0.0, std);
    }
}

/// One materialised file.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Repo path.
    pub path: String,
    /// Storage kind.
    pub storage: Storage,
    /// Size in bytes.
    pub size: u64,
    /// sha256 hex of the content.
    pub sha256: String,
    /// Git blob sha1: of the content for regular files, of the LFS pointer otherwise.
    pub git_oid: String,
    /// LFS pointer text (LFS and Xet files).
    pub pointer: Option<String>,
    /// Xet file hash (Xet files).
    pub xet_hash: Option<String>,
    /// Content.
    pub data: Bytes,
}

/// One materialised commit.
#[derive(Debug, Clone)]
pub struct Commit {
    /// 40-hex sha.
    pub sha: String,
    /// Title.
    pub message: String,
    /// ISO-8601 date.
    pub date: String,
    /// Files by path.
    pub files: BTreeMap<String, FileEntry>,
}

/// One materialised repo.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `owner/name`.
    pub id: String,
    /// Type.
    pub kind: RepoKind,
    /// Private.
    pub private: bool,
    /// Gated.
    pub gated: bool,
    /// Commits, oldest first.
    pub commits: Vec<Commit>,
    /// Branch -> sha.
    pub branches: BTreeMap<String, String>,
    /// Tag -> sha.
    pub tags: BTreeMap<String, String>,
    /// PR number -> sha.
    pub prs: BTreeMap<u32, String>,
}

impl Repo {
    /// Resolve a revision (branch, tag, `refs/pr/N`, `refs/heads/X`, `refs/tags/X`, full sha).
    pub fn resolve(&self, rev: &str) -> Option<&Commit> {
        let sha = if let Some(s) = self.branches.get(rev) {
            s.clone()
        } else if let Some(s) = self.tags.get(rev) {
            s.clone()
        } else if let Some(s) = rev
            .strip_prefix("refs/heads/")
            .and_then(|b| self.branches.get(b))
        {
            s.clone()
        } else if let Some(s) = rev
            .strip_prefix("refs/tags/")
            .and_then(|b| self.tags.get(b))
        {
            s.clone()
        } else if let Some(n) = rev
            .strip_prefix("refs/pr/")
            .and_then(|n| n.parse::<u32>().ok())
        {
            self.prs.get(&n)?.clone()
        } else {
            rev.to_string()
        };
        self.commits.iter().find(|c| c.sha == sha)
    }

    /// The commit `main` points to (or the last commit).
    pub fn head(&self) -> &Commit {
        self.resolve("main")
            .unwrap_or_else(|| self.commits.last().expect("repo has commits"))
    }
}

/// Everything the servers serve, built once at start.
#[derive(Debug, Default)]
pub struct Store {
    /// Repos by (kind, id).
    pub repos: BTreeMap<(RepoKind, String), Repo>,
    /// LFS and Xet contents by sha256 (CDN `/lfs/`).
    pub by_sha256: HashMap<String, Bytes>,
    /// Xet contents by xet hash (CDN `/xet-bridge/`), with their sha256 computed once (the
    /// bridge answers it as the ETag on every request).
    pub by_xet_hash: HashMap<String, (Bytes, String)>,
}

pub(crate) fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

pub(crate) fn git_blob_oid(data: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex::encode(h.finalize())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Pending Xet upload: (repo key, commit index, path, data).
pub(crate) struct XetJob {
    pub sha256: String,
    pub data: Bytes,
}

/// Build repos from a spec; Xet hashes are filled in later by [`Store::set_xet_hashes`].
pub(crate) fn materialize(spec: &FixtureSpec) -> Result<(Store, Vec<XetJob>), Error> {
    let mut store = Store::default();
    let mut jobs: Vec<XetJob> = Vec::new();
    let mut queued: BTreeSet<String> = BTreeSet::new();
    for rs in &spec.repos {
        if rs.id.split('/').count() != 2 {
            return Err(Error::Spec(format!(
                "repo id {:?} is not owner/name",
                rs.id
            )));
        }
        if rs.commits.is_empty() {
            return Err(Error::Spec(format!("repo {} has no commits", rs.id)));
        }
        let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
        let mut commits = Vec::new();
        for (i, cs) in rs.commits.iter().enumerate() {
            for d in &cs.delete {
                files.remove(d);
            }
            for fs in &cs.files {
                let data = Bytes::from(fs.content.generate()?);
                let sha256 = sha256_hex(&data);
                let (git_oid, pointer) = match fs.storage {
                    Storage::Regular => (git_blob_oid(&data), None),
                    Storage::Lfs | Storage::Xet => {
                        let p = format!(
                            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {}\n",
                            data.len()
                        );
                        (git_blob_oid(p.as_bytes()), Some(p))
                    }
                };
                if fs.storage != Storage::Regular {
                    store.by_sha256.insert(sha256.clone(), data.clone());
                }
                if fs.storage == Storage::Xet && queued.insert(sha256.clone()) {
                    jobs.push(XetJob {
                        sha256: sha256.clone(),
                        data: data.clone(),
                    });
                }
                files.insert(
                    fs.path.clone(),
                    FileEntry {
                        path: fs.path.clone(),
                        storage: fs.storage,
                        size: data.len() as u64,
                        sha256,
                        git_oid,
                        pointer,
                        xet_hash: None,
                        data,
                    },
                );
            }
            let sha =
                sha1_hex(format!("hubsim commit {} {} {i}", rs.kind.plural(), rs.id).as_bytes());
            commits.push(Commit {
                sha,
                message: if cs.message.is_empty() {
                    format!("commit {i}")
                } else {
                    cs.message.clone()
                },
                date: format!("2025-01-{:02}T12:00:00.000Z", (i % 28) + 1),
                files: files.clone(),
            });
        }
        let pick = |idx: usize, what: &str| -> Result<String, Error> {
            commits
                .get(idx)
                .map(|c: &Commit| c.sha.clone())
                .ok_or_else(|| {
                    Error::Spec(format!("{} {what} points at missing commit {idx}", rs.id))
                })
        };
        let mut branches = BTreeMap::new();
        for (b, &i) in &rs.branches {
            branches.insert(b.clone(), pick(i, b)?);
        }
        if !branches.contains_key("main") {
            branches.insert(
                "main".into(),
                commits.last().expect("non-empty").sha.clone(),
            );
        }
        let mut tags = BTreeMap::new();
        for (t, &i) in &rs.tags {
            tags.insert(t.clone(), pick(i, t)?);
        }
        let mut prs = BTreeMap::new();
        for (n, &i) in &rs.prs {
            prs.insert(*n, pick(i, "pr")?);
        }
        let repo = Repo {
            id: rs.id.clone(),
            kind: rs.kind,
            private: rs.private,
            gated: rs.gated,
            commits,
            branches,
            tags,
            prs,
        };
        store.repos.insert((rs.kind, rs.id.clone()), repo);
    }
    Ok((store, jobs))
}

impl Store {
    /// Record the Xet hashes (sha256 -> xet hash) from the uploads.
    pub(crate) fn set_xet_hashes(&mut self, hashes: &HashMap<String, String>) {
        for repo in self.repos.values_mut() {
            for c in &mut repo.commits {
                for f in c.files.values_mut() {
                    if f.storage == Storage::Xet {
                        f.xet_hash = hashes.get(&f.sha256).cloned();
                        if let Some(h) = &f.xet_hash {
                            self.by_xet_hash
                                .insert(h.clone(), (f.data.clone(), f.sha256.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Find a repo.
    pub fn repo(&self, kind: RepoKind, id: &str) -> Option<&Repo> {
        self.repos.get(&(kind, id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of a safetensors file: (JSON, where the data starts).
    fn header(bytes: &[u8]) -> (serde_json::Value, usize) {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
    }

    #[test]
    fn safetensors_have_a_valid_header_whose_tensors_fill_the_file() {
        for size in [256 * 1024, 3 * MIB + 7, 16 * MIB] {
            let c = Content::Safetensors {
                size,
                seed: 1,
                patches: vec![],
            };
            let bytes = c.generate().unwrap();
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(bytes, c.generate().unwrap(), "deterministic");
            let (h, start) = header(&bytes);
            assert_eq!(start % 8, 0, "header padded to 8");
            let mut spans: Vec<(u64, u64, String)> = h
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(_, t)| {
                    let o = t["data_offsets"].as_array().unwrap();
                    (
                        o[0].as_u64().unwrap(),
                        o[1].as_u64().unwrap(),
                        t["dtype"].to_string(),
                    )
                })
                .collect();
            spans.sort();
            assert_eq!(spans.first().unwrap().0, 0);
            assert!(spans.windows(2).all(|w| w[0].1 == w[1].0), "contiguous");
            assert_eq!(spans.last().unwrap().1, size - start as u64, "to the end");
            assert!(spans.iter().any(|s| s.2 == "\"BF16\""));
        }
    }

    #[test]
    fn bf16_weights_look_like_trained_weights_and_patches_change_only_their_region() {
        let c = Content::Safetensors {
            size: 4 * MIB,
            seed: 2,
            patches: vec![],
        };
        let base = c.generate().unwrap();
        let (_, start) = header(&base);
        // bf16 of N(0, 0.02): the high byte (sign + exponent) takes few values.
        let high: std::collections::HashSet<u8> = base[start..start + 100_000]
            .chunks(2)
            .map(|p| p[1])
            .collect();
        assert!(high.len() < 40, "{} distinct high bytes of 256", high.len());
        let patched = Content::Safetensors {
            size: 4 * MIB,
            seed: 2,
            patches: vec![Patch {
                offset: MIB,
                len: 64 * 1024,
                seed: 3,
            }],
        }
        .generate()
        .unwrap();
        let diff: Vec<usize> = (0..base.len()).filter(|&i| base[i] != patched[i]).collect();
        assert!(!diff.is_empty());
        assert!(
            diff.iter()
                .all(|&i| (MIB as usize..(MIB + 64 * 1024) as usize).contains(&i))
        );
    }

    /// Bytes after xet-core's chunk compression over bytes: 64 KiB chunks (the CAS's average),
    /// each compressed as the uploader does (`Auto`) and kept raw when that is smaller.
    fn cas_ratio(data: &[u8]) -> f64 {
        use xet_core_structures::xorb_object::CompressionScheme;
        let stored: usize = data
            .chunks(64 * 1024)
            .map(|c| {
                let z = CompressionScheme::Auto.compress_from_slice(c).unwrap();
                z.len().min(c.len()) + 8
            })
            .sum();
        stored as f64 / data.len() as f64
    }

    #[test]
    fn the_generator_compresses_like_trained_bf16_weights() {
        // Real trained weights from a pinned wheel, rounded to bf16 (acme/trained's two bf16
        // files), against the generator's weights and its whole checkpoint.
        let trained: Vec<u8> = ["ch_PP-OCRv4_rec_infer.onnx", "ch_PP-OCRv4_det_infer.onnx"]
            .iter()
            .flat_map(|m| {
                Content::Trained {
                    requirement: crate::trained::RAPIDOCR.into(),
                    member: format!("rapidocr_onnxruntime/models/{m}"),
                    bf16: true,
                }
                .generate()
                .unwrap()
            })
            .collect();
        let mut weights = vec![0u8; 4 * MIB as usize];
        fill_weights(&mut weights, 1);
        let (t, w) = (cas_ratio(&trained), cas_ratio(&weights));
        assert!(
            (t - w).abs() < 0.015,
            "trained bf16 weights keep {t:.3} of their bytes, generated ones {w:.3}"
        );
        // The whole checkpoint mixes in fp32 norms (more compressible) and packed bytes (not).
        let checkpoint = Content::Safetensors {
            size: 8 * MIB,
            seed: 7001,
            patches: vec![],
        }
        .generate()
        .unwrap();
        let c = cas_ratio(&checkpoint);
        assert!(
            (t - c).abs() < 0.03,
            "trained bf16 weights keep {t:.3} of their bytes, the generated checkpoint {c:.3}"
        );
    }
}
