//! Labelled image sets stored as `<root>/<split>/<class>/<name>.jpg|jpeg|png`, in a directory
//! or a (gzipped) tarball. Images are decoded in parallel with rayon into channels-first u8.
//!
//! Sample order is fixed by the files, not by the decoder threads: class in the order of
//! [`ImageSetSpec::classes`], then file name, numbers compared as numbers (`2.jpg` before
//! `10.jpg`).

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::cifar::{CIFAR10_CLASSES, CIFAR_SIDE};
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};

/// What an image set looks like: its class directory names in label order, and the shape every
/// image must have after conversion (`channels` 1 = grey, 3 = RGB). With `resize`, images of
/// another size are resized to `height x width` (bilinear, aspect ratio not kept); without it
/// they are an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSetSpec {
    pub classes: Vec<String>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub train_split: String,
    pub test_split: String,
    pub resize: bool,
}

impl ImageSetSpec {
    /// CIFAR-10: ten classes in the usual order, 3x32x32, splits `train` and `test`.
    pub fn cifar10() -> Self {
        ImageSetSpec {
            classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            channels: 3,
            height: CIFAR_SIDE,
            width: CIFAR_SIDE,
            train_split: "train".into(),
            test_split: "test".into(),
            resize: false,
        }
    }

    /// A folder's own classes: the sorted names of the directories under `<root>/train`, images
    /// converted to `channels` and resized to `height x width`.
    pub fn discover(root: &Path, channels: usize, height: usize, width: usize) -> Result<Self> {
        let train = root.join("train");
        let listing = std::fs::read_dir(&train).map_err(|e| {
            DataError::io(
                &train,
                "listing the train split (expected <root>/train/<class>/*.png|jpg)",
                e,
            )
        })?;
        let mut classes = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| DataError::io(&train, "listing split directory", e))?;
            if entry.path().is_dir() {
                classes.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        if classes.is_empty() {
            return Err(DataError::malformed(
                &train,
                "no class directories (expected <root>/train/<class>/*.png|jpg)",
            ));
        }
        classes.sort();
        let spec = ImageSetSpec {
            classes,
            channels,
            height,
            width,
            train_split: "train".into(),
            test_split: "test".into(),
            resize: true,
        };
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<()> {
        if self.classes.is_empty() || self.classes.len() > 256 {
            return Err(DataError::InvalidArgument(format!(
                "an image set needs 1..=256 classes, got {}",
                self.classes.len()
            )));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::InvalidArgument(format!(
                "image channels must be 1 or 3, got {}",
                self.channels
            )));
        }
        if self.height == 0 || self.width == 0 {
            return Err(DataError::InvalidArgument(format!(
                "image size {}x{} is empty",
                self.height, self.width
            )));
        }
        if self
            .height
            .checked_mul(self.width)
            .and_then(|p| p.checked_mul(self.channels))
            .is_none()
        {
            return Err(DataError::InvalidArgument(format!(
                "image size {}x{}x{} overflows",
                self.channels, self.height, self.width
            )));
        }
        Ok(())
    }

    /// A stable description, part of the decoded cache's key.
    pub fn describe(&self) -> String {
        format!(
            "classes={};shape={}x{}x{};splits={},{}{}",
            self.classes.join(","),
            self.channels,
            self.height,
            self.width,
            self.train_split,
            self.test_split,
            if self.resize { ";resize=triangle" } else { "" }
        )
    }
}

/// One encoded image waiting to be decoded.
struct Encoded {
    /// Where it came from, for errors: a file path or `tarball:member`.
    origin: PathBuf,
    class: usize,
    name: String,
    bytes: Vec<u8>,
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// File-name order: numeric stems compare as numbers, everything else as strings.
fn compare_names(a: &str, b: &str) -> Ordering {
    let stem = |s: &str| s.split('.').next().unwrap_or("").parse::<u64>().ok();
    match (stem(a), stem(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

fn decode_all(mut items: Vec<Encoded>, spec: &ImageSetSpec) -> Result<Dataset> {
    items.sort_by(|a, b| {
        a.class
            .cmp(&b.class)
            .then_with(|| compare_names(&a.name, &b.name))
    });
    let sample = spec.channels * spec.height * spec.width;
    let mut images = vec![0u8; items.len() * sample];
    let results: Vec<Result<()>> = images
        .par_chunks_mut(sample.max(1))
        .zip(items.par_iter())
        .map(|(out, item)| decode_image_into(out, &item.bytes, &item.origin, spec))
        .collect();
    // The first failure in sample order, so the message does not depend on thread timing.
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let labels = items.iter().map(|i| i.class as u8).collect();
    Dataset::new(
        images,
        labels,
        spec.channels,
        spec.height,
        spec.width,
        spec.classes.len(),
    )
}

/// JPEG decoders fill a truncated scan with grey instead of failing, so a cut-off JPEG is caught
/// here: its last end-of-image marker (FF D9) must follow its last start-of-scan marker (FF DA).
/// (Neither pair can occur inside entropy-coded data, where FF is always stuffed as FF 00.)
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (None, _) => Err("JPEG has no scan (start-of-scan marker missing)"),
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        _ => Err("truncated JPEG: no end-of-image marker after the last scan"),
    }
}

/// Decodes one encoded image (JPEG or PNG) into `out`, channels-first u8 of the spec's shape
/// (`out.len()` must be `channels * height * width`); `origin` names it in errors.
pub fn decode_image_into(
    out: &mut [u8],
    bytes: &[u8],
    origin: &Path,
    spec: &ImageSetSpec,
) -> Result<()> {
    spec.check()?;
    let sample = spec.channels * spec.height * spec.width;
    if out.len() != sample {
        return Err(DataError::InvalidArgument(format!(
            "{}: output of {} bytes for a {}x{}x{} image",
            origin.display(),
            out.len(),
            spec.channels,
            spec.height,
            spec.width
        )));
    }
    check_jpeg_complete(bytes)
        .map_err(|what| DataError::malformed(origin, format!("cannot decode image: {what}")))?;
    let mut img = image::load_from_memory(bytes)
        .map_err(|e| DataError::malformed(origin, format!("cannot decode image: {e}")))?;
    if spec.resize && (img.height() as usize, img.width() as usize) != (spec.height, spec.width) {
        img = img.resize_exact(
            spec.width as u32,
            spec.height as u32,
            image::imageops::FilterType::Triangle,
        );
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (h, w) != (spec.height, spec.width) {
        return Err(DataError::malformed(
            origin,
            format!(
                "image is {w}x{h} (width x height), expected {}x{}",
                spec.width, spec.height
            ),
        ));
    }
    let plane = h * w;
    if spec.channels == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        // Interleaved RGB to channels-first planes.
        let rgb = img.to_rgb8();
        for (p, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            out[p] = px[0];
            out[plane + p] = px[1];
            out[2 * plane + p] = px[2];
        }
    }
    Ok(())
}

/// Loads one split of an image folder: `<root>/<split>/<class>/*.jpg|jpeg|png`. A missing class
/// directory means no samples of that class; a directory that names no class is an error (it
/// usually means a wrong class list). Other files are ignored.
pub fn load_image_folder_split(root: &Path, split: &str, spec: &ImageSetSpec) -> Result<Dataset> {
    let files = list_image_folder_split(root, split, spec)?;
    let mut items = Vec::with_capacity(files.len());
    for f in files {
        let bytes =
            std::fs::read(&f.path).map_err(|e| DataError::io(&f.path, "reading image", e))?;
        items.push(Encoded {
            origin: f.path,
            class: f.class,
            name: f.name,
            bytes,
        });
    }
    decode_all(items, spec)
}

/// One image file of an image folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderImage {
    pub path: PathBuf,
    pub class: usize,
    pub name: String,
    /// Size in bytes and modification time (nanoseconds since the epoch, 0 if unknown): with the
    /// path they make the folder cache's key without reading every file.
    pub len: u64,
    pub modified_ns: u128,
}

/// Lists the image files of one split, in loader order (class, then file name). Errors as for
/// [`load_image_folder_split`].
pub fn list_image_folder_split(
    root: &Path,
    split: &str,
    spec: &ImageSetSpec,
) -> Result<Vec<FolderImage>> {
    spec.check()?;
    let split_dir = root.join(split);
    let entries = std::fs::read_dir(&split_dir)
        .map_err(|e| DataError::io(&split_dir, "listing split directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(&split_dir, "listing split directory", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !spec.classes.contains(&name) {
            return Err(DataError::malformed(
                entry.path(),
                format!(
                    "directory '{name}' is not one of the classes {:?}",
                    spec.classes
                ),
            ));
        }
    }
    let mut files = Vec::new();
    for (class, class_name) in spec.classes.iter().enumerate() {
        let dir = split_dir.join(class_name);
        if !dir.is_dir() {
            continue;
        }
        let listing = std::fs::read_dir(&dir)
            .map_err(|e| DataError::io(&dir, "listing class directory", e))?;
        let before = files.len();
        for entry in listing {
            let entry = entry.map_err(|e| DataError::io(&dir, "listing class directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !is_image_name(&name) {
                continue;
            }
            let meta = std::fs::metadata(&path)
                .map_err(|e| DataError::io(&path, "reading metadata", e))?;
            if !meta.is_file() {
                continue;
            }
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            files.push(FolderImage {
                path,
                class,
                name,
                len: meta.len(),
                modified_ns,
            });
        }
        // A class directory that exists but holds no image is a mistake (a failed copy, a
        // wrong extension), not a class without samples.
        if files.len() == before {
            return Err(DataError::malformed(
                &dir,
                "empty class directory: no .jpg, .jpeg or .png file in it",
            ));
        }
    }
    files.sort_by(|a, b| {
        a.class
            .cmp(&b.class)
            .then_with(|| compare_names(&a.name, &b.name))
    });
    Ok(files)
}

/// Loads both splits of an image folder.
pub fn load_image_folder(root: &Path, spec: &ImageSetSpec) -> Result<Splits> {
    Ok(Splits {
        train: load_image_folder_split(root, &spec.train_split, spec)?,
        test: load_image_folder_split(root, &spec.test_split, spec)?,
    })
}

/// Decodes both splits from a tarball (gzipped or plain) whose image members end in
/// `<split>/<class>/<name>.jpg|jpeg|png` under any prefix directory. Members of other splits and
/// non-image members are ignored; an image member under a known split whose class directory is
/// not in the spec is an error naming the member.
pub fn decode_image_tarball(tarball: &Path, spec: &ImageSetSpec) -> Result<Splits> {
    spec.check()?;
    let raw = std::fs::File::open(tarball).map_err(|e| DataError::io(tarball, "opening", e))?;
    decode_image_tarball_from(raw, tarball, spec)
}

/// [`decode_image_tarball`] of a tarball read from `reader` (a file, or bytes in memory);
/// `tarball` names it in errors.
pub fn decode_image_tarball_from(
    reader: impl Read,
    tarball: &Path,
    spec: &ImageSetSpec,
) -> Result<Splits> {
    spec.check()?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let gz = {
        use std::io::BufRead;
        let buf = reader
            .fill_buf()
            .map_err(|e| DataError::io(tarball, "reading", e))?;
        buf.starts_with(&crate::fsutil::GZIP_MAGIC)
    };
    let stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(stream);
    let bad = |e: std::io::Error| {
        DataError::malformed(tarball, format!("corrupt or truncated tarball: {e}"))
    };
    let mut train = Vec::new();
    let mut test = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(bad)?.into_owned();
        let parts: Vec<String> = member
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if parts.len() < 3 || !is_image_name(&parts[parts.len() - 1]) {
            continue;
        }
        let (split, class_name, name) = (
            &parts[parts.len() - 3],
            &parts[parts.len() - 2],
            &parts[parts.len() - 1],
        );
        let target = if *split == spec.train_split {
            &mut train
        } else if *split == spec.test_split {
            &mut test
        } else {
            continue;
        };
        let origin = PathBuf::from(format!("{}:{}", tarball.display(), member.display()));
        let class = spec
            .classes
            .iter()
            .position(|c| c == class_name)
            .ok_or_else(|| {
                DataError::malformed(
                    &origin,
                    format!(
                        "class directory '{class_name}' is not one of {:?}",
                        spec.classes
                    ),
                )
            })?;
        // The member's claimed size only sizes the first allocation, capped, so that a header
        // claiming terabytes fails on the bytes actually there instead of allocating them.
        let claimed = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(claimed.min(crate::npy::PREALLOCATE_MAX));
        entry.read_to_end(&mut bytes).map_err(bad)?;
        target.push(Encoded {
            origin,
            class,
            name: name.clone(),
            bytes,
        });
    }
    if train.is_empty() && test.is_empty() {
        return Err(DataError::malformed(
            tarball,
            format!(
                "no images found under <{}|{}>/<class>/*.jpg|jpeg|png",
                spec.train_split, spec.test_split
            ),
        ));
    }
    Ok(Splits {
        train: decode_all(train, spec)?,
        test: decode_all(test, spec)?,
    })
}
