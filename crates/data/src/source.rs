//! A user's own data set, by kind and path: any four IDX files, NumPy arrays (`.npz`, or a
//! directory of `.npy` files) and image folders. Shapes and class counts come from the data.
//!
//! * `idx:DIR`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//!   `t10k-labels-idx1-ubyte`, each raw or as `<name>.gz`, of any IDX dtype (unsigned bytes
//!   stay bytes; signed integers and floats become f32 features); optionally each file's sha256
//!   (of the file as stored) is checked.
//! * `npz:FILE` / `npy:DIR`: arrays `x_train`, `y_train`, `x_test`, `y_test` (in the archive, or
//!   as `DIR/<name>.npy`). Features: uint8 (kept as bytes, like images) or float/integer (kept
//!   as f32), any shape `[N, ...]`; labels: integers `[N]` (or `[N, 1]`), 0 ..= 255.
//! * `image-folder:DIR`: `DIR/{train,test}/<class>/*.png|jpg`, the classes the sorted directory
//!   names under `train`, decoded once, resized and cached (see [`crate::cache`]).
//!
//! Sample shapes: `[N, D]` is `1 x 1 x D`, `[N, H, W]` is `1 x H x W`, `[N, A, B, C]` is
//! channels-first `A x B x C` unless `C` is 1 or 3 and `A` is not, when it is taken as
//! channels-last `H x W x C` (NumPy's usual image layout) and transposed. The class count is
//! the largest label plus one, over both splits, unless given; a given count below a label is
//! an error naming the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::datadir::DataDir;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::fsutil;
use crate::idx;
use crate::images::ImageSetSpec;
use crate::npy::{self, NpyArray, NpyValues};

/// The four IDX files of a set, in the order train images, train labels, test images, test
/// labels, under their usual (MNIST) names.
pub const IDX_FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The four arrays of an `.npz` (or `.npy` directory) set.
pub const NPY_ARRAY_NAMES: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];

/// Kinds of user data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Idx,
    Npz,
    Npy,
    ImageFolder,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Idx,
        SourceKind::Npz,
        SourceKind::Npy,
        SourceKind::ImageFolder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Idx => "idx",
            SourceKind::Npz => "npz",
            SourceKind::Npy => "npy",
            SourceKind::ImageFolder => "image-folder",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SourceKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "data kind `{s}`: use idx, npz, npy or image-folder"
                ))
            })
    }
}

/// `KIND:PATH`, as given on a command line.
pub fn parse_kind_path(s: &str) -> Result<(SourceKind, PathBuf)> {
    let (kind, path) = s.split_once(':').ok_or_else(|| {
        DataError::InvalidArgument(format!(
            "data source `{s}`: expected KIND:PATH (idx:DIR, npz:FILE, npy:DIR, image-folder:DIR)"
        ))
    })?;
    if path.is_empty() {
        return Err(DataError::InvalidArgument(format!(
            "data source `{s}`: the path is empty"
        )));
    }
    Ok((kind.parse()?, PathBuf::from(path)))
}

/// Options of [`load_source`]; the defaults take everything from the data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceOptions {
    /// The class count; `None`: the largest label plus one.
    pub classes: Option<usize>,
    /// sha256 (hex) of IDX files by file name (as found, `.gz` included or not).
    pub sha256: BTreeMap<String, String>,
    /// Image folders: channels (1 or 3, default 3) and `[height, width]` (default: the first
    /// training image's size).
    pub channels: Option<usize>,
    pub image_size: Option<[usize; 2]>,
    /// `npz`/`npy` sets for a mean-squared-error network: `y_train`/`y_test` are regression
    /// targets (`[N]` or `[N, D]`, any numeric dtype) and, when both are absent, each sample's
    /// target is its own input (an auto-encoder). Other kinds of set have only class labels.
    pub regression: bool,
}

/// Loads a data set of `kind` from `path`; image folders are cached in `dir`.
pub fn load_source(
    kind: SourceKind,
    path: &Path,
    opts: &SourceOptions,
    dir: &DataDir,
) -> Result<Splits> {
    if opts.regression {
        return match kind {
            SourceKind::Npz | SourceKind::Npy => load_regression(kind, path),
            _ => Err(DataError::InvalidArgument(format!(
                "{kind}:{}: regression and auto-encoder targets (an mse loss) come from npz or npy \
                 sets; a {kind} set has class labels only",
                path.display()
            ))),
        };
    }
    match kind {
        SourceKind::Idx => load_idx_dir(path, opts),
        SourceKind::Npz => {
            let arrays = npy::read_npz(path, &NPY_ARRAY_NAMES)?;
            splits_from_arrays(arrays, opts.classes)
        }
        SourceKind::Npy => {
            check_npy_dir(path)?;
            let arrays = NPY_ARRAY_NAMES
                .iter()
                .map(|n| npy::read_npy(&path.join(format!("{n}.npy"))))
                .collect::<Result<Vec<_>>>()?;
            splits_from_arrays(arrays, opts.classes)
        }
        SourceKind::ImageFolder => load_image_folder_auto(path, opts, dir),
    }
}

fn check_npy_dir(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    Err(DataError::malformed(
        path,
        "npy: expected a directory holding x_train.npy, y_train.npy, x_test.npy, y_test.npy",
    ))
}

/// The arrays of a regression set: `x_train`, `x_test` and, when present (both or neither),
/// `y_train`, `y_test`.
fn load_regression(kind: SourceKind, path: &Path) -> Result<Splits> {
    let has_y = match kind {
        SourceKind::Npz => {
            let names = npy::npz_array_names(path)?;
            let has = |n: &str| names.iter().any(|m| m == n);
            (has("y_train"), has("y_test"))
        }
        _ => {
            check_npy_dir(path)?;
            let has = |n: &str| path.join(format!("{n}.npy")).is_file();
            (has("y_train"), has("y_test"))
        }
    };
    let names: &[&str] = match has_y {
        (true, true) => &NPY_ARRAY_NAMES,
        (false, false) => &["x_train", "x_test"],
        (tr, _) => {
            return Err(DataError::malformed(
                path,
                format!(
                    "{} is there but {} is not: give both regression targets, or neither for \
                     an auto-encoder",
                    if tr { "y_train" } else { "y_test" },
                    if tr { "y_test" } else { "y_train" }
                ),
            ))
        }
    };
    let arrays = match kind {
        SourceKind::Npz => npy::read_npz(path, names)?,
        _ => names
            .iter()
            .map(|n| npy::read_npy(&path.join(format!("{n}.npy"))))
            .collect::<Result<Vec<_>>>()?,
    };
    regression_splits_from_arrays(arrays)
}

/// Both splits of a regression set from `[x_train, y_train, x_test, y_test]` (value targets)
/// or `[x_train, x_test]` (each sample's target is its input).
pub fn regression_splits_from_arrays(arrays: Vec<NpyArray>) -> Result<Splits> {
    let unlabeled = |x: NpyArray| -> Result<Dataset> {
        let n = x.shape.first().copied().unwrap_or(0);
        let fake = NpyArray {
            shape: vec![n],
            dtype: "<u1".into(),
            values: NpyValues::U8(vec![0; n]),
            origin: x.origin.clone(),
        };
        Ok(split_from(x, &fake)?.0)
    };
    let with_values = |ds: Dataset, y: &NpyArray| -> Result<Dataset> {
        let n = ds.len();
        if y.shape.first() != Some(&n) {
            return Err(DataError::malformed(
                &y.origin,
                format!("{:?} targets for {n} samples", y.shape),
            ));
        }
        if let Some((i, v)) = y.first_non_finite() {
            return Err(DataError::malformed(
                &y.origin,
                format!("non-finite target {v} at flat index {i}"),
            ));
        }
        let per = y.shape[1..].iter().product::<usize>();
        ds.with_value_targets(y.to_f32(), per)
            .map_err(|e| DataError::malformed(&y.origin, e.to_string()))
    };
    let (train, test) = match <[NpyArray; 4]>::try_from(arrays) {
        Ok([xtr, ytr, xte, yte]) => {
            let train = with_values(unlabeled(xtr)?, &ytr)?;
            let test = with_values(unlabeled(xte)?, &yte)?;
            if train.output_len() != test.output_len() {
                return Err(DataError::malformed(
                    &yte.origin,
                    format!(
                        "{} targets per test sample, {} per training sample ({})",
                        test.output_len(),
                        train.output_len(),
                        ytr.origin.display()
                    ),
                ));
            }
            (train, test)
        }
        Err(v) => match <[NpyArray; 2]>::try_from(v) {
            Ok([xtr, xte]) => (
                unlabeled(xtr)?.as_auto_encoder(),
                unlabeled(xte)?.as_auto_encoder(),
            ),
            Err(v) => {
                return Err(DataError::InvalidArgument(format!(
                    "2 or 4 arrays expected, got {}",
                    v.len()
                )))
            }
        },
    };
    if (train.channels, train.height, train.width) != (test.channels, test.height, test.width) {
        return Err(DataError::InvalidArgument(format!(
            "test samples are {}x{}x{}, training samples are {}x{}x{}",
            test.channels, test.height, test.width, train.channels, train.height, train.width
        )));
    }
    if train.is_empty() {
        return Err(DataError::InvalidArgument(
            "the training split has no samples".into(),
        ));
    }
    Ok(Splits { train, test })
}

/// `<dir>/<name>` or `<dir>/<name>.gz`, whichever exists (raw first).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Loads the four IDX files of [`IDX_FILE_NAMES`] from `dir` (raw or gzipped), checking the
/// sha256 of those named in `opts.sha256`.
pub fn load_idx_dir(dir: &Path, opts: &SourceOptions) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(DataError::malformed(
            dir,
            format!(
                "idx: not a directory (expected one holding {})",
                IDX_FILE_NAMES.join(", ")
            ),
        ));
    }
    let mut paths = Vec::with_capacity(4);
    let mut missing = Vec::new();
    for name in IDX_FILE_NAMES {
        match find_file(dir, name) {
            Some(p) => paths.push(p),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(DataError::malformed(
            dir,
            format!(
                "IDX files missing: {} (neither raw nor .gz)",
                missing.join(", ")
            ),
        ));
    }
    for name in opts.sha256.keys() {
        let known = paths
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == *name));
        if !known {
            return Err(DataError::InvalidArgument(format!(
                "sha256 given for `{name}`, which is not one of the files found in {}",
                dir.display()
            )));
        }
    }
    let mut arrays = Vec::with_capacity(4);
    for p in &paths {
        let name = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(expected) = opts.sha256.get(&name) {
            let actual = fsutil::hex(&fsutil::sha256_file(p)?);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(DataError::Checksum {
                    path: p.clone(),
                    algorithm: "sha256",
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let (dims, values) = idx::read_idx_values(p)?;
        arrays.push(NpyArray {
            shape: dims,
            dtype: match values {
                NpyValues::U8(_) => "idx u8",
                NpyValues::I64(_) => "idx int",
                NpyValues::F32(_) => "idx float",
            }
            .into(),
            values,
            origin: p.clone(),
        });
    }
    splits_from_arrays(arrays, opts.classes)
}

/// `(channels, height, width, channels_last)` of one sample of an array shaped `[N, ...]`.
fn sample_shape(x: &NpyArray) -> Result<(usize, usize, usize, bool)> {
    let s = &x.shape;
    let shape = match s.len() {
        2 => (1, 1, s[1], false),
        3 => (1, s[1], s[2], false),
        4 => {
            let is_c = |d: usize| matches!(d, 1 | 3);
            if is_c(s[3]) && !is_c(s[1]) {
                (s[3], s[1], s[2], true)
            } else {
                (s[1], s[2], s[3], false)
            }
        }
        _ => {
            return Err(DataError::malformed(
                &x.origin,
                format!("shape {s:?}: expected [N, D], [N, H, W] or [N, C, H, W] / [N, H, W, C]"),
            ))
        }
    };
    // An empty array passes every data-length check whatever its other dimensions: the sample
    // size is counted with checks.
    match shape
        .0
        .checked_mul(shape.1)
        .and_then(|p| p.checked_mul(shape.2))
    {
        Some(0) => {
            return Err(DataError::malformed(
                &x.origin,
                format!("shape {s:?}: a sample has no values"),
            ))
        }
        None => {
            return Err(DataError::malformed(
                &x.origin,
                format!("shape {s:?}: a sample has more values than can be counted"),
            ))
        }
        Some(_) => {}
    }
    Ok(shape)
}

/// Channels-last `[N, H, W, C]` values to channels-first.
fn to_channels_first<T: Copy + Default>(v: &[T], n: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    let s = c * h * w;
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out[i * s + (ch * h + y) * w + x] = v[i * s + (y * w + x) * c + ch];
                }
            }
        }
    }
    out
}

/// Labels `[N]` or `[N, 1]` as bytes, each checked to be in 0..=255.
fn labels_of(y: &NpyArray) -> Result<Vec<u8>> {
    let ok_shape = y.shape.len() == 1 || (y.shape.len() == 2 && y.shape[1] == 1);
    if !ok_shape {
        return Err(DataError::malformed(
            &y.origin,
            format!(
                "labels must have shape [N] (or [N, 1]), got {:?} (one-hot labels: store the class indices instead)",
                y.shape
            ),
        ));
    }
    y.to_i64()?
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            u8::try_from(l).map_err(|_| {
                DataError::malformed(
                    &y.origin,
                    format!("label {l} at index {i} is out of range (labels are 0..=255)"),
                )
            })
        })
        .collect()
}

/// One split from its feature and label arrays (class count checked later).
fn split_from(x: NpyArray, y: &NpyArray) -> Result<(Dataset, PathBuf, PathBuf)> {
    let labels = labels_of(y)?;
    let n = x.shape.first().copied().unwrap_or(0);
    if x.shape.is_empty() {
        return Err(DataError::malformed(
            &x.origin,
            "a 0-dimensional array holds no samples",
        ));
    }
    if labels.len() != n {
        return Err(DataError::malformed(
            &y.origin,
            format!(
                "{} labels for the {n} samples of {}",
                labels.len(),
                x.origin.display()
            ),
        ));
    }
    if let Some((i, v)) = x.first_non_finite() {
        return Err(DataError::malformed(
            &x.origin,
            format!("non-finite value {v} at flat index {i}"),
        ));
    }
    let (c, h, w, last) = sample_shape(&x)?;
    // Placeholder class count (256 holds every u8 label); set from the data by the caller.
    let ds = match x.values {
        NpyValues::U8(v) => {
            let v = if last {
                to_channels_first(&v, n, c, h, w)
            } else {
                v
            };
            Dataset::new(v, labels, c, h, w, 256)
        }
        vals => {
            let f = match vals {
                NpyValues::F32(f) => f,
                NpyValues::I64(i) => i.into_iter().map(|v| v as f32).collect(),
                NpyValues::U8(_) => unreachable!("handled above"),
            };
            let f = if last {
                to_channels_first(&f, n, c, h, w)
            } else {
                f
            };
            Dataset::from_f32(f, labels, c, h, w, 256)
        }
    }
    .map_err(|e| DataError::malformed(&x.origin, e.to_string()))?;
    Ok((ds, x.origin, y.origin.clone()))
}

/// Both splits from `[x_train, y_train, x_test, y_test]`, with the class count from the labels
/// (or `classes`) and matching sample shapes.
pub fn splits_from_arrays(arrays: Vec<NpyArray>, classes: Option<usize>) -> Result<Splits> {
    let [xtr, ytr, xte, yte]: [NpyArray; 4] = arrays.try_into().map_err(|v: Vec<NpyArray>| {
        DataError::InvalidArgument(format!("4 arrays expected, got {}", v.len()))
    })?;
    let (mut train, xtr_o, ytr_o) = split_from(xtr, &ytr)?;
    let (mut test, xte_o, yte_o) = split_from(xte, &yte)?;
    if (train.channels, train.height, train.width) != (test.channels, test.height, test.width) {
        return Err(DataError::malformed(
            &xte_o,
            format!(
                "test samples are {}x{}x{}, training samples ({}) are {}x{}x{}",
                test.channels,
                test.height,
                test.width,
                xtr_o.display(),
                train.channels,
                train.height,
                train.width
            ),
        ));
    }
    if train.is_float() != test.is_float() && !train.is_empty() && !test.is_empty() {
        return Err(DataError::malformed(
            &xte_o,
            format!(
                "test features and training features ({}) differ in kind (uint8 and float)",
                xtr_o.display()
            ),
        ));
    }
    if train.is_empty() {
        return Err(DataError::malformed(
            &xtr_o,
            "the training split has no samples",
        ));
    }
    let max_of = |ds: &Dataset| ds.labels.iter().copied().max().map(usize::from);
    let found = max_of(&train).max(max_of(&test)).map_or(1, |m| m + 1);
    let classes = match classes {
        None => found,
        Some(k) => {
            for (ds, origin) in [(&train, &ytr_o), (&test, &yte_o)] {
                if let Some((i, &l)) = ds
                    .labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| usize::from(l) >= k)
                {
                    return Err(DataError::malformed(
                        origin,
                        format!("label {l} at index {i} is not below the declared class count {k}"),
                    ));
                }
            }
            k
        }
    };
    train.classes = classes;
    test.classes = classes;
    Ok(Splits { train, test })
}

/// An image folder with its classes discovered ([`ImageSetSpec::discover`]), decoded once and
/// cached in `dir`.
pub fn load_image_folder_auto(root: &Path, opts: &SourceOptions, dir: &DataDir) -> Result<Splits> {
    let channels = opts.channels.unwrap_or(3);
    let [h, w] = match opts.image_size {
        Some(s) => s,
        None => first_image_size(root)?,
    };
    let spec = ImageSetSpec::discover(root, channels, h, w)?;
    if let Some(k) = opts.classes {
        if k != spec.classes.len() {
            return Err(DataError::malformed(
                root.join("train"),
                format!(
                    "{} class directories {:?}, but {k} classes were declared",
                    spec.classes.len(),
                    spec.classes
                ),
            ));
        }
    }
    crate::cache::load_image_folder_cached(root, &spec, dir)
}

/// The `[height, width]` of the first image (in loader order) of the first class of `train`.
fn first_image_size(root: &Path) -> Result<[usize; 2]> {
    let probe = ImageSetSpec::discover(root, 3, 1, 1)?;
    let files = crate::images::list_image_folder_split(root, "train", &probe)?;
    let first = files.first().ok_or_else(|| {
        DataError::malformed(root.join("train"), "no images (expected <class>/*.png|jpg)")
    })?;
    let (w, h) = image::image_dimensions(&first.path)
        .map_err(|e| DataError::malformed(&first.path, format!("cannot read image size: {e}")))?;
    Ok([h as usize, w as usize])
}
