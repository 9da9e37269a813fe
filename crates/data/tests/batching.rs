//! Dataset, normalisation, shuffling, batching and augmentation.

mod common;

use common::{assert_err_mentions, bytes, labels};
use lowprec_data::batch::reference_sample;
use lowprec_data::{
    crop_flip_decision, epoch_permutation, Augment, Batch, BatchConfig, CropFlip, DataError,
    Dataset, EpochBatches, Normalization,
};

fn dataset(seed: u64, n: usize, c: usize, h: usize, w: usize) -> Dataset {
    Dataset::new(
        bytes(seed, n * c * h * w),
        labels(seed + 1, n, 10),
        c,
        h,
        w,
        10,
    )
    .unwrap()
}

fn all_batches(ds: &Dataset, norm: &Normalization, cfg: BatchConfig, epoch: u64) -> Vec<Batch> {
    EpochBatches::new(ds, norm, cfg, epoch)
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn dataset_checks_and_subset() {
    assert_err_mentions(
        Dataset::new(vec![0; 5], vec![0, 1], 1, 1, 2, 10),
        &["need 4 values, got 5"],
    );
    assert_err_mentions(
        Dataset::new(vec![0; 2], vec![0, 10], 1, 1, 1, 10),
        &["label 10 of sample 1"],
    );
    assert_err_mentions(
        Dataset::new(vec![], vec![], 0, 1, 1, 10),
        &["zero dimension"],
    );
    assert_err_mentions(Dataset::new(vec![], vec![], 1, 1, 1, 0), &["classes"]);
    let ds = dataset(1, 7, 3, 2, 2);
    let sub = ds.subset(3).unwrap();
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.images, ds.images[..36]);
    assert_eq!(sub.labels, ds.labels[..3]);
    assert_eq!(ds.subset(7).unwrap(), ds);
    assert!(ds.subset(0).unwrap().is_empty());
    assert_err_mentions(ds.subset(8), &["subset of 8", "data set of 7"]);
    assert_eq!(ds.class_counts().iter().sum::<usize>(), 7);
}

#[test]
fn channel_stats_match_f64_reference() {
    for (n, c, h, w) in [
        (1, 1, 1, 1),
        (7, 3, 5, 3),
        (33, 3, 32, 32),
        (1000, 1, 28, 28),
    ] {
        let ds = dataset(n as u64, n, c, h, w);
        let (mean, std) = ds.channel_stats().unwrap();
        for ch in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| ds.image(i)[ch * h * w..(ch + 1) * h * w].to_vec())
                .map(|v| f64::from(v) / 255.0)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let s =
                (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64).sqrt();
            assert!(
                (f64::from(mean[ch]) - m).abs() <= 1e-6,
                "mean {} vs {m}",
                mean[ch]
            );
            assert!(
                (f64::from(std[ch]) - s).abs() <= 1e-6,
                "std {} vs {s}",
                std[ch]
            );
        }
    }
    assert!(dataset(0, 0, 1, 1, 1).channel_stats().is_err());
    // A constant channel gets std 1 in the normalisation instead of a division by zero.
    let flat = Dataset::new(vec![7; 8], vec![0, 1], 1, 2, 2, 10).unwrap();
    let norm = Normalization::from_dataset(&flat).unwrap();
    assert_eq!(norm.std, vec![1.0]);
    assert_eq!(norm.apply(0, 7), 0.0);
}

#[test]
fn normalisation_values_and_errors() {
    let unit = Normalization::unit(1);
    assert_eq!(unit.apply(0, 0), 0.0);
    assert_eq!(unit.apply(0, 255), 1.0);
    let mnist = Normalization::mnist();
    for v in [0u8, 1, 128, 255] {
        let want = (f64::from(v) / 255.0 - 0.1307) / 0.3081;
        assert!((f64::from(mnist.apply(0, v)) - want).abs() <= 1e-6 * want.abs().max(1.0));
    }
    assert_err_mentions(Normalization::new(vec![0.5], vec![0.0]), &["std 0"]);
    assert_err_mentions(
        Normalization::new(vec![f32::NAN], vec![1.0]),
        &["not finite"],
    );
    assert_err_mentions(
        Normalization::new(vec![0.5], vec![f32::INFINITY]),
        &["std inf"],
    );
    assert_err_mentions(
        Normalization::new(vec![0.5, 0.5], vec![1.0]),
        &["2 means and 1 stds"],
    );
    assert_err_mentions(Normalization::new(vec![], vec![]), &["one mean"]);
    let ds = dataset(1, 4, 3, 2, 2);
    assert_err_mentions(
        EpochBatches::new(&ds, &Normalization::unit(1), BatchConfig::eval(2), 0),
        &["3 channels"],
    );
    assert!(matches!(
        EpochBatches::new(&ds, &Normalization::unit(3), BatchConfig::eval(0), 0),
        Err(DataError::InvalidArgument(_))
    ));
    let bad = Normalization {
        mean: vec![0.0; 3],
        std: vec![0.0; 3],
    };
    assert_err_mentions(
        EpochBatches::new(&ds, &bad, BatchConfig::eval(2), 0),
        &["std 0"],
    );
    // Normalised batch values against an f64 reference.
    let norm = Normalization::new(vec![0.49, 0.48, 0.45], vec![0.25, 0.24, 0.26]).unwrap();
    let b = EpochBatches::new(&ds, &norm, BatchConfig::eval(4), 0)
        .unwrap()
        .batch(0)
        .unwrap();
    for i in 0..4 {
        for c in 0..3 {
            for p in 0..4 {
                let v = ds.image(i)[c * 4 + p];
                let want =
                    (f64::from(v) / 255.0 - f64::from(norm.mean[c])) / f64::from(norm.std[c]);
                let got = f64::from(b.images[(i * 3 + c) * 4 + p]);
                assert!(
                    (got - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn permutations_are_permutations_and_reproducible() {
    for n in [0usize, 1, 2, 7, 33, 1000, 50000] {
        let p = epoch_permutation(n, 42, 3);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n = {n}");
        assert_eq!(
            epoch_permutation(n, 42, 3),
            p,
            "same seed and epoch, same order"
        );
        if n >= 7 {
            assert_ne!(
                epoch_permutation(n, 42, 4),
                p,
                "another epoch, another order (n = {n})"
            );
            assert_ne!(
                epoch_permutation(n, 43, 3),
                p,
                "another seed, another order (n = {n})"
            );
        }
    }
}

#[test]
fn shuffles_are_uniform_over_small_permutations() {
    // All 6 orders of 3 items, over 6000 epochs: each near 1000 (sd about 29).
    let mut counts = std::collections::HashMap::new();
    for epoch in 0..6000 {
        *counts
            .entry(epoch_permutation(3, 9, epoch))
            .or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 6);
    for (perm, c) in &counts {
        assert!((850..1150).contains(c), "{perm:?} seen {c} times");
    }
}

#[test]
fn an_epoch_visits_every_sample_exactly_once() {
    let ds = dataset(5, 33, 1, 3, 2);
    let norm = Normalization::unit(1);
    let keep = BatchConfig {
        drop_last: false,
        ..BatchConfig::train(7, 11)
    };
    let epoch = EpochBatches::new(&ds, &norm, keep, 2).unwrap();
    assert_eq!(epoch.num_batches(), 5);
    let batches: Vec<Batch> = epoch.iter().collect();
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        vec![7, 7, 7, 7, 5]
    );
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, epoch.order());
    seen.sort_unstable();
    assert_eq!(seen, (0..33).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.shape(), [b.len(), 1, 3, 2]);
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], ds.labels[i]);
        }
    }
    assert!(epoch.batch(5).is_err());

    let drop = EpochBatches::new(&ds, &norm, BatchConfig::train(7, 11), 2).unwrap();
    assert_eq!(drop.num_batches(), 4);
    let mut dropped: Vec<usize> = drop.iter().flat_map(|b| b.indices).collect();
    assert_eq!(dropped.len(), 28);
    dropped.sort_unstable();
    dropped.dedup();
    assert_eq!(dropped.len(), 28);

    let eval = EpochBatches::new(&ds, &norm, BatchConfig::eval(10), 0).unwrap();
    assert_eq!(eval.order(), (0..33).collect::<Vec<_>>());
    assert_eq!(eval.num_batches(), 4);
    // A batch larger than the set: one partial batch, or none when dropping.
    assert_eq!(
        EpochBatches::new(&ds, &norm, BatchConfig::eval(100), 0)
            .unwrap()
            .num_batches(),
        1
    );
    assert_eq!(
        EpochBatches::new(&ds, &norm, BatchConfig::train(100, 0), 0)
            .unwrap()
            .num_batches(),
        0
    );
    let empty = dataset(0, 0, 1, 3, 2);
    assert_eq!(
        EpochBatches::new(&empty, &norm, BatchConfig::eval(4), 0)
            .unwrap()
            .iter()
            .count(),
        0
    );
}

#[test]
fn batches_match_the_scalar_reference_bit_exactly() {
    let augments = [
        Augment::None,
        Augment::CropFlip { pad: 4 },
        Augment::CropFlip { pad: 0 },
        Augment::CropFlip { pad: 1 },
    ];
    for (k, (c, h, w)) in [
        (1usize, 1usize, 1usize),
        (3, 7, 5),
        (3, 33, 33),
        (1, 28, 28),
        (3, 32, 32),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 37;
        let ds = dataset(k as u64 + 100, n, c, h, w);
        let norm = if c == 1 {
            Normalization::mnist()
        } else {
            Normalization::new(vec![0.49, 0.48, 0.45], vec![0.25, 0.24, 0.26]).unwrap()
        };
        for augment in augments {
            let cfg = BatchConfig {
                drop_last: false,
                ..BatchConfig::train(8, 77)
            }
            .with_augment(augment);
            for epoch in [0u64, 5] {
                for b in all_batches(&ds, &norm, cfg, epoch) {
                    for (s, &i) in b.indices.iter().enumerate() {
                        let want = reference_sample(&ds, &norm, augment, 77, epoch, i);
                        let got = &b.images[s * c * h * w..(s + 1) * c * h * w];
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "shape {c}x{h}x{w}, {augment:?}, epoch {epoch}, sample {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn batches_do_not_depend_on_thread_count() {
    let ds = dataset(9, 70, 3, 32, 32);
    let norm = Normalization::from_dataset(&ds).unwrap();
    let cfg = BatchConfig::train(16, 1234).with_augment(Augment::CropFlip { pad: 4 });
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| all_batches(&ds, &norm, cfg, 7))
    };
    let one = run(1);
    for threads in [2, 3] {
        let many = run(threads);
        assert_eq!(one.len(), many.len());
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a.indices, b.indices);
            assert!(a
                .images
                .iter()
                .zip(&b.images)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
    // A resumed run: planning epoch 7 afresh, in any order of batches, gives the same batches.
    let resumed = EpochBatches::new(&ds, &norm, cfg, 7).unwrap();
    for b in (0..resumed.num_batches()).rev() {
        assert_eq!(resumed.batch(b).unwrap(), one[b]);
    }
    // And fill_batch reuses a buffer with the same result.
    let mut buf = resumed.batch(0).unwrap();
    resumed.fill_batch(2, &mut buf).unwrap();
    assert_eq!(buf, one[2]);
}

/// Finds a dataset index whose augmentation in (seed, epoch) is `want`.
fn index_with(seed: u64, epoch: u64, pad: usize, want: CropFlip) -> usize {
    (0..100_000)
        .find(|&i| crop_flip_decision(seed, epoch, i, pad) == want)
        .expect("some index draws this decision")
}

#[test]
fn crop_and_flip_do_what_they_say_on_a_known_image() {
    // A 4x4 grey image with pixels 1..16 in row-major order, padded by 1.
    let pixels: Vec<u8> = (1..=16).collect();
    let seed = 3;
    let epoch = 2;
    let pad = 1;
    let cases: [(CropFlip, [[u8; 4]; 4]); 3] = [
        // Crop starting at padded (0, 2), then mirrored: row 0 is padding, column 0 is padding.
        (
            CropFlip {
                dy: 0,
                dx: 2,
                flip: true,
            },
            [[0, 0, 0, 0], [0, 4, 3, 2], [0, 8, 7, 6], [0, 12, 11, 10]],
        ),
        // Crop starting at padded (2, 0), not mirrored: shifted up one row and right one column.
        (
            CropFlip {
                dy: 2,
                dx: 0,
                flip: false,
            },
            [[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]],
        ),
        // Centre crop, mirrored: the image flipped left-right.
        (
            CropFlip {
                dy: 1,
                dx: 1,
                flip: true,
            },
            [
                [4, 3, 2, 1],
                [8, 7, 6, 5],
                [12, 11, 10, 9],
                [16, 15, 14, 13],
            ],
        ),
    ];
    let norm = Normalization::new(vec![0.1], vec![0.5]).unwrap();
    for (decision, expected) in cases {
        let i = index_with(seed, epoch, pad, decision);
        // Put the known image at index i of a data set, other samples random.
        let n = i + 1;
        let mut images = bytes(1, n * 16);
        images[i * 16..(i + 1) * 16].copy_from_slice(&pixels);
        let ds = Dataset::new(images, vec![0; n], 1, 4, 4, 10).unwrap();
        let cfg = BatchConfig {
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            seed,
            augment: Augment::CropFlip { pad },
        };
        let b = EpochBatches::new(&ds, &norm, cfg, epoch)
            .unwrap()
            .batch(i)
            .unwrap();
        assert_eq!(b.indices, vec![i]);
        let want: Vec<f32> = expected
            .iter()
            .flatten()
            .map(|&v| norm.apply(0, v))
            .collect();
        assert_eq!(b.images, want, "{decision:?}");
    }
}

#[test]
fn augmentation_decisions_are_deterministic_and_spread() {
    let pad = 4;
    let mut dy = [0usize; 9];
    let mut dx = [0usize; 9];
    let mut flips = 0;
    let n = 18_000;
    for i in 0..n {
        let d = crop_flip_decision(8, 1, i, pad);
        assert_eq!(d, crop_flip_decision(8, 1, i, pad));
        dy[d.dy] += 1;
        dx[d.dx] += 1;
        flips += usize::from(d.flip);
    }
    // Each offset about 2000 (sd about 42).
    for c in dy.iter().chain(&dx) {
        assert!((1800..2200).contains(c), "offset counts {dy:?} {dx:?}");
    }
    assert!((8700..9300).contains(&flips), "{flips} flips of {n}");
    // Other epochs and seeds decide differently.
    let same_epoch: Vec<CropFlip> = (0..64).map(|i| crop_flip_decision(8, 1, i, pad)).collect();
    let next_epoch: Vec<CropFlip> = (0..64).map(|i| crop_flip_decision(8, 2, i, pad)).collect();
    let other_seed: Vec<CropFlip> = (0..64).map(|i| crop_flip_decision(9, 1, i, pad)).collect();
    assert_ne!(same_epoch, next_epoch);
    assert_ne!(same_epoch, other_seed);
    // pad 0 never crops.
    assert!((0..100).all(|i| {
        let d = crop_flip_decision(1, 0, i, 0);
        d.dx == 0 && d.dy == 0
    }));
}

#[test]
fn augmentation_follows_the_dataset_index_not_the_batch_position() {
    let ds = dataset(4, 40, 3, 8, 8);
    let norm = Normalization::unit(3);
    let aug = Augment::CropFlip { pad: 2 };
    let shuffled: Vec<Batch> =
        all_batches(&ds, &norm, BatchConfig::train(5, 21).with_augment(aug), 3);
    let ordered = BatchConfig {
        shuffle: false,
        ..BatchConfig::train(5, 21).with_augment(aug)
    };
    let plain: Vec<Batch> = all_batches(&ds, &norm, ordered, 3);
    let sample = 3 * 8 * 8;
    let image_of = |bs: &[Batch], idx: usize| -> Vec<f32> {
        for b in bs {
            if let Some(k) = b.indices.iter().position(|&i| i == idx) {
                return b.images[k * sample..(k + 1) * sample].to_vec();
            }
        }
        panic!("index {idx} not in any batch");
    };
    for idx in 0..40 {
        assert_eq!(
            image_of(&shuffled, idx),
            image_of(&plain, idx),
            "sample {idx}"
        );
    }
}

#[test]
fn batch_parts_concatenate_to_the_batch() {
    let ds = dataset(11, 50, 3, 5, 5);
    let norm = Normalization::from_dataset(&ds).unwrap();
    let cfg = BatchConfig::train(13, 4).with_augment(Augment::CropFlip { pad: 2 });
    let eb = EpochBatches::new(&ds, &norm, cfg, 3).unwrap();
    for b in 0..eb.num_batches() {
        let whole = eb.batch(b).unwrap();
        for parts in [1, 2, 3, 5, 13] {
            let mut joined = eb.batch(0).unwrap();
            joined.images.clear();
            joined.labels.clear();
            joined.indices.clear();
            let mut part = eb.batch(0).unwrap();
            for p in 0..parts {
                eb.fill_batch_part(b, p, parts, &mut part).unwrap();
                let (s, e) = eb.part_range(b, p, parts).unwrap();
                assert_eq!(part.len(), e - s);
                joined.images.extend_from_slice(&part.images);
                joined.labels.extend_from_slice(&part.labels);
                joined.indices.extend_from_slice(&part.indices);
            }
            assert_eq!(joined, whole, "batch {b} in {parts} parts");
        }
    }
    let mut out = eb.batch(0).unwrap();
    assert_err_mentions(eb.fill_batch_part(0, 2, 2, &mut out), &["part 2 of 2"]);
    assert_err_mentions(eb.fill_batch_part(0, 0, 0, &mut out), &["parts must be"]);
    assert_err_mentions(
        eb.fill_batch_part(0, 0, 14, &mut out),
        &["13 rows, fewer than the 14 parts"],
    );
}
