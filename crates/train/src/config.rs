//! Training descriptions: one TOML file says what to train (network), on what (data), in which
//! precision and on which schedule. Presets for the papers' experiments ship with lowprec.

use lowprec_nn::{NetworkSpec, Precision};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::varprec::{FastConfig, ScheduleEntry};
use crate::TrainError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    /// The network: a table (`[model]` with `[[model.layer]]`s) or the name of a built-in
    /// description (`model = "vgg16-cifar"`, see [`lowprec_nn::zoo`]). Always written as the
    /// table, so a checkpoint carries the whole network.
    #[serde(deserialize_with = "model_table_or_name")]
    pub model: NetworkSpec,
    pub train: OptimConfig,
    #[serde(default)]
    pub swa: Option<SwaConfig>,
    /// Precision schedule entries (see [`crate::varprec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precision_schedule: Vec<ScheduleEntry>,
    /// FAST's adaptive precision (see [`crate::varprec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast: Option<FastConfig>,
}

fn model_table_or_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NetworkSpec, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = NetworkSpec;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a network table or the name of a built-in network")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<NetworkSpec, E> {
            lowprec_nn::zoo::get(name).map_err(E::custom)
        }
        // a table keeps the layer-level error messages of `NetworkSpec` itself
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<NetworkSpec, A::Error> {
            NetworkSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V)
}

fn default_precision() -> Precision {
    Precision::fp32()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `mnist` or `cifar10` (the JPEG tarball) or `cifar10-binary` (a directory of the
    /// canonical binary release), or a set of one's own at `path`: `idx` (a directory of the
    /// four IDX files), `npz` (a file of x_train, y_train, x_test, y_test), `npy` (a directory
    /// of those four .npy files) or `image-folder` (`path/{train,test}/<class>/*`); see
    /// `lowprec_data::source`.
    pub dataset: String,
    /// `unit` (bytes x/255, float features as they are), `mnist` ((x/255 - 0.1307)/0.3081),
    /// `dataset` (per-channel mean/std of the training split) or `explicit` (`mean`, `std`).
    #[serde(default = "default_normalize")]
    pub normalize: String,
    /// Per-channel mean and std of `normalize = "explicit"` (on the x/255 scale for bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// Class count of a set of one's own (default: the largest label plus one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// `idx`: sha256 of files by name (as stored, `.gz` included), checked before loading.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sha256: std::collections::BTreeMap<String, String>,
    /// `image-folder`: channels (1 grey or 3 RGB, default 3) and `[height, width]` every image
    /// is resized to (default: the first training image's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
    /// Random crop with 4-pixel padding and horizontal flip (CIFAR).
    #[serde(default)]
    pub augment: bool,
    /// Use only the first N training / test examples (0 = all).
    #[serde(default)]
    pub train_subset: usize,
    #[serde(default)]
    pub test_subset: usize,
    /// Directory of `cifar10-binary`, or the tarball of `cifar10` (default: found by the
    /// data crate).
    #[serde(default)]
    pub path: Option<String>,
}

fn default_normalize() -> String {
    "unit".into()
}

impl DataConfig {
    /// True for `idx`, `npz`, `npy` and `image-folder`: a set of one's own at `path`.
    pub fn is_own(&self) -> bool {
        self.dataset.parse::<lowprec_data::SourceKind>().is_ok()
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.dataset.as_str() {
            "mnist" | "cifar10" | "cifar10-binary" => {}
            _ if self.is_own() => {
                if self.path.as_deref().is_none_or(str::is_empty) {
                    return Err(format!(
                        "data.dataset = \"{}\" needs data.path",
                        self.dataset
                    ));
                }
            }
            d => {
                return Err(format!(
                    "data.dataset = \"{d}\": use mnist, cifar10, cifar10-binary, idx, npz, npy or image-folder"
                ))
            }
        }
        match self.normalize.as_str() {
            "unit" | "mnist" | "dataset" => {
                if self.mean.is_some() || self.std.is_some() {
                    return Err(format!(
                        "data.mean / data.std are for normalize = \"explicit\", not \"{}\"",
                        self.normalize
                    ));
                }
            }
            "explicit" => match (&self.mean, &self.std) {
                (Some(m), Some(s)) if !m.is_empty() && m.len() == s.len() => {
                    if let Some(v) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                        return Err(format!("data.std holds {v}: each must be finite and > 0"));
                    }
                    if let Some(v) = m.iter().find(|v| !v.is_finite()) {
                        return Err(format!("data.mean holds {v}: each must be finite"));
                    }
                }
                _ => {
                    return Err(
                        "normalize = \"explicit\" needs data.mean and data.std, one value per channel each"
                            .into(),
                    )
                }
            },
            n => {
                return Err(format!(
                    "data.normalize = \"{n}\": use unit, mnist, dataset or explicit"
                ))
            }
        }
        if !self.is_own()
            && (self.classes.is_some()
                || !self.sha256.is_empty()
                || self.channels.is_some()
                || self.image_size.is_some())
        {
            return Err(format!(
                "data.classes, sha256, channels and image_size are for idx, npz, npy and image-folder sets, not {}",
                self.dataset
            ));
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(format!("data.channels = {c}: use 1 (grey) or 3 (RGB)"));
            }
        }
        if let Some([h, w]) = self.image_size {
            if h == 0 || w == 0 {
                return Err(format!("data.image_size = [{h}, {w}] has a zero side"));
            }
        }
        if let Some(k) = self.classes {
            if !(1..=256).contains(&k) {
                return Err(format!("data.classes = {k}: use 1..=256"));
            }
        }
        Ok(())
    }

    /// A relative `path` in a TOML file names a file beside that TOML, wherever the tool is
    /// started from; `base` is the TOML's directory.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        if let Some(p) = self.path.as_deref() {
            let rel = Path::new(p);
            if rel.is_relative() && !base.as_os_str().is_empty() {
                self.path = Some(base.join(rel).display().to_string());
            }
        }
    }

    /// Points this description at a set of one's own: `KIND:PATH` (`idx:DIR`, `npz:FILE`,
    /// `npy:DIR`, `image-folder:DIR`). A preset's MNIST normalisation gives way to the new
    /// data's own statistics (`dataset`).
    pub fn set_source(&mut self, kind_path: &str) -> Result<(), String> {
        let (kind, path) = lowprec_data::parse_kind_path(kind_path).map_err(|e| e.to_string())?;
        if !self.is_own() && self.normalize == "mnist" {
            self.normalize = "dataset".into();
        }
        self.dataset = kind.name().into();
        self.path = Some(path.display().to_string());
        self.validate()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    /// Linear decay from `lr` to the SWA learning rate (or `lr_end`) at the SWA start, then
    /// constant (002: "decayed linearly ... SWA for the last 25% at 0.01").
    Linear,
    /// Multiply by `gamma` at each milestone epoch.
    Step,
    /// SWALP's schedule: flat for the first half of the SWA start, linear decay to
    /// `swa_lr / lr` (1% without SWA) by 90% of it, then the SWA learning rate.
    Swalp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub batch: usize,
    pub epochs: usize,
    pub lr: f64,
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleKind,
    #[serde(default)]
    pub lr_end: Option<f64>,
    #[serde(default)]
    pub milestones: Vec<usize>,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_schedule() -> ScheduleKind {
    ScheduleKind::Constant
}
fn default_gamma() -> f64 {
    0.1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SwaEvery {
    /// `"epoch"`: average once per epoch (at its end).
    Named(String),
    /// Average every N iterations.
    Iterations(u64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwaConfig {
    /// First epoch (0-based) of averaging, or ...
    #[serde(default)]
    pub start_epoch: Option<usize>,
    /// ... the fraction of the epochs after which averaging starts (0.75 = last 25%).
    #[serde(default)]
    pub start_fraction: Option<f64>,
    pub lr: f64,
    #[serde(default = "default_every")]
    pub every: SwaEvery,
}

fn default_every() -> SwaEvery {
    SwaEvery::Named("epoch".into())
}

impl SwaConfig {
    /// The first averaging epoch for a run of `epochs` epochs.
    pub fn start(&self, epochs: usize) -> usize {
        match (self.start_epoch, self.start_fraction) {
            (Some(e), _) => e,
            (None, Some(f)) => ((epochs as f64) * f).round() as usize,
            (None, None) => ((epochs as f64) * 0.75).round() as usize,
        }
    }
    /// Iterations between averages, `None` for once per epoch.
    pub fn every_iterations(&self) -> Option<u64> {
        match &self.every {
            SwaEvery::Named(_) => None,
            SwaEvery::Iterations(n) => Some(*n),
        }
    }
}

/// Built-in presets: `(name, TOML)`.
pub const PRESETS: &[(&str, &str)] = &[
    ("mnist-logreg", include_str!("../presets/mnist-logreg.toml")),
    ("mnist-mlp", include_str!("../presets/mnist-mlp.toml")),
    ("lenet5", include_str!("../presets/lenet5.toml")),
    ("vgg16-cifar", include_str!("../presets/vgg16-cifar.toml")),
    (
        "preresnet20-cifar",
        include_str!("../presets/preresnet20-cifar.toml"),
    ),
    (
        "preresnet20-cifar-short",
        include_str!("../presets/preresnet20-cifar-short.toml"),
    ),
    (
        "preresnet20-cifar-10k",
        include_str!("../presets/preresnet20-cifar-10k.toml"),
    ),
];

impl TrainConfig {
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, TrainError> {
        let c: TrainConfig =
            toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        c.validate()
            .map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        Ok(c)
    }

    /// A preset name or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self, TrainError> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, &format!("preset {name_or_path}"));
        }
        let p = Path::new(name_or_path);
        if p.exists() {
            let text = std::fs::read_to_string(p)
                .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
            let mut cfg = Self::from_toml(&text, &p.display().to_string())?;
            cfg.data
                .resolve_relative_to(p.parent().unwrap_or(Path::new("")));
            return Ok(cfg);
        }
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        Err(TrainError::Config(format!(
            "`{name_or_path}` is neither a preset ({}) nor an existing file",
            names.join(", ")
        )))
    }

    pub fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        if t.batch == 0 {
            return Err("train.batch must be >= 1".into());
        }
        if t.epochs == 0 {
            return Err("train.epochs must be >= 1".into());
        }
        for (what, v) in [
            ("train.lr", t.lr),
            ("train.momentum", t.momentum),
            ("train.weight_decay", t.weight_decay),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{what} = {v} must be finite and >= 0"));
            }
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return Err(format!("train.momentum = {} must be in [0, 1)", t.momentum));
        }
        if t.schedule == ScheduleKind::Step && t.milestones.is_empty() {
            return Err("schedule = \"step\" needs train.milestones".into());
        }
        if let Some(s) = &self.swa {
            if !s.lr.is_finite() || s.lr < 0.0 {
                return Err(format!("swa.lr = {} must be finite and >= 0", s.lr));
            }
            if let Some(f) = s.start_fraction {
                if !(0.0..=1.0).contains(&f) {
                    return Err(format!("swa.start_fraction = {f} must be in [0, 1]"));
                }
            }
            match &s.every {
                SwaEvery::Named(n) if n != "epoch" => {
                    return Err(format!(
                        "swa.every = \"{n}\": use \"epoch\" or a number of iterations"
                    ))
                }
                SwaEvery::Iterations(0) => return Err("swa.every must be >= 1 iteration".into()),
                _ => {}
            }
        }
        for (i, e) in self.precision_schedule.iter().enumerate() {
            e.validate()
                .map_err(|m| format!("precision_schedule[{i}]: {m}"))?;
        }
        if let Some(f) = &self.fast {
            f.validate()?;
        }
        self.data.validate()?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "name = \"t\"\n[data]\ndataset = \"mnist\"\n[train]\nbatch = 8\nepochs = 1\nlr = 0.1\n";

    #[test]
    fn presets_name_their_network_and_get_the_whole_description() {
        for p in [
            "preresnet20-cifar",
            "preresnet20-cifar-short",
            "preresnet20-cifar-10k",
        ] {
            let c = TrainConfig::load(p).unwrap();
            assert_eq!(
                c.model,
                lowprec_nn::zoo::get("preresnet20-cifar").unwrap(),
                "{p}"
            );
        }
        let c = TrainConfig::load("vgg16-cifar").unwrap();
        assert_eq!(c.model, lowprec_nn::zoo::get("vgg16-cifar").unwrap());
    }

    #[test]
    fn a_named_network_is_written_back_as_its_table() {
        let text = format!("model = \"vgg16-cifar\"\n{HEAD}");
        let c = TrainConfig::from_toml(&text, "t.toml").unwrap();
        let out = c.to_toml();
        assert!(out.contains("[[model.layer]]"), "{out}");
        assert_eq!(TrainConfig::from_toml(&out, "again").unwrap(), c);
    }

    #[test]
    fn an_unknown_network_name_or_a_bad_layer_is_named() {
        let text = format!("model = \"vgg19\"\n{HEAD}");
        let e = TrainConfig::from_toml(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml") && e.contains("vgg19") && e.contains("vgg16-cifar"),
            "{e}"
        );
        let text = format!("{HEAD}[model]\ninput = [4]\nloss = \"cross-entropy\"\n[[model.layer]]\ntype = \"linear\"\nouts = 3\n");
        let e = TrainConfig::from_toml(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outs"), "{e}");
    }
}
