//! From a [`DataConfig`] to in-memory splits, their normalisation and augmentation.

use lowprec_data::{Augment, DataDir, Dataset, Normalization, SourceKind, SourceOptions};
use std::path::{Path, PathBuf};

use crate::config::DataConfig;
use crate::TrainError;

pub struct DataSplits {
    pub train: Dataset,
    pub test: Dataset,
    pub norm: Normalization,
    pub augment: Augment,
}

/// `n` examples spread evenly over `ds` (image collections are often stored class by class,
/// so "the first n" would be one class).
pub fn spread_subset(ds: &Dataset, n: usize) -> Result<Dataset, TrainError> {
    if n == 0 || n >= ds.len() {
        return Ok(ds.clone());
    }
    let picks: Vec<usize> = (0..n)
        .map(|i| (i as u128 * ds.len() as u128 / n as u128) as usize)
        .collect();
    Ok(ds.select(&picks)?)
}

/// The splits of a classification set.
pub fn load(cfg: &DataConfig, data_dir: Option<PathBuf>) -> Result<DataSplits, TrainError> {
    load_with_targets(cfg, false, data_dir)
}

/// The splits of a set; with `regression` (a network with an mse loss), an npz/npy set's
/// `y` arrays are regression targets, or each sample's input when it has none.
pub fn load_with_targets(
    cfg: &DataConfig,
    regression: bool,
    data_dir: Option<PathBuf>,
) -> Result<DataSplits, TrainError> {
    let dir = DataDir::resolve(data_dir)?;
    let splits = match cfg.dataset.as_str() {
        d if regression && d.parse::<SourceKind>().is_err() => {
            return Err(TrainError::Config(format!(
                "an mse loss needs regression or auto-encoder targets from an npz or npy set; \
                 `{d}` has class labels (use loss = \"cross-entropy\")"
            )))
        }
        "mnist" => lowprec_data::load_mnist(&dir)?,
        "cifar10" => {
            let tarball = cfg.path.as_ref().map(PathBuf::from);
            lowprec_data::load_cifar10_jpeg(tarball.as_deref(), &dir)?
        }
        "cifar10-binary" => {
            let p = cfg.path.as_ref().ok_or_else(|| {
                TrainError::Config(
                    "data.path must name the directory of the CIFAR-10 binary release".into(),
                )
            })?;
            lowprec_data::load_cifar_binary(std::path::Path::new(p))?
        }
        d => {
            let kind: SourceKind = d
                .parse()
                .map_err(|_| TrainError::Config(format!("unknown data set `{d}`")))?;
            let path = cfg.path.as_deref().ok_or_else(|| {
                TrainError::Config(format!("data.dataset = \"{d}\" needs data.path"))
            })?;
            let opts = SourceOptions {
                classes: cfg.classes,
                sha256: cfg.sha256.clone(),
                channels: cfg.channels,
                image_size: cfg.image_size,
                regression,
            };
            lowprec_data::load_source(kind, Path::new(path), &opts, &dir)?
        }
    };
    let train = spread_subset(&splits.train, cfg.train_subset)?;
    let test = spread_subset(&splits.test, cfg.test_subset)?;
    let norm = match cfg.normalize.as_str() {
        "unit" => Normalization::unit(train.channels),
        "mnist" => Normalization::mnist(),
        "explicit" => Normalization::new(
            cfg.mean.clone().unwrap_or_default(),
            cfg.std.clone().unwrap_or_default(),
        )?,
        _ => Normalization::from_dataset(&train)?,
    };
    if norm.mean.len() != train.channels {
        return Err(TrainError::Config(format!(
            "data.normalize = \"{}\" has {} channel(s); the data has {}",
            cfg.normalize,
            norm.mean.len(),
            train.channels
        )));
    }
    let augment = if cfg.augment {
        Augment::CropFlip { pad: 4 }
    } else {
        Augment::None
    };
    Ok(DataSplits {
        train,
        test,
        norm,
        augment,
    })
}
