//! From a [`DataConfig`] to in-memory splits, their normalisation and augmentation.

use lowprec_data::{Augment, DataDir, Dataset, Normalization};
use std::path::PathBuf;

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
    let s = ds.sample_len();
    let mut images = Vec::with_capacity(n * s);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let j = (i as u128 * ds.len() as u128 / n as u128) as usize;
        images.extend_from_slice(ds.image(j));
        labels.push(ds.labels[j]);
    }
    Ok(Dataset::new(
        images,
        labels,
        ds.channels,
        ds.height,
        ds.width,
        ds.classes,
    )?)
}

pub fn load(cfg: &DataConfig, data_dir: Option<PathBuf>) -> Result<DataSplits, TrainError> {
    let dir = DataDir::resolve(data_dir)?;
    let splits = match cfg.dataset.as_str() {
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
        d => return Err(TrainError::Config(format!("unknown data set `{d}`"))),
    };
    let train = spread_subset(&splits.train, cfg.train_subset)?;
    let test = spread_subset(&splits.test, cfg.test_subset)?;
    let norm = match cfg.normalize.as_str() {
        "unit" => Normalization::unit(train.channels),
        "mnist" => Normalization::mnist(),
        _ => Normalization::from_dataset(&train)?,
    };
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
