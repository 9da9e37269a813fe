//! Reusable work buffers for the im2col matrices and GEMM outputs of the convolution.
//!
//! A `vec![0; n]` of a few MB per GEMM cost a `memset` of the whole buffer every time (glibc
//! hands freed heap memory back, which `calloc` must clear). Layers run one after another, so one small per-thread pool of buffers
//! serves them all and memory stays bounded by the largest layer's needs.
//!
//! A [`Scratch`] buffer's contents are unspecified (left over from its previous user): take one
//! only for data the caller overwrites completely before reading (im2col output, the output of
//! a GEMM that does not accumulate, a gather).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static POOL_I8: RefCell<Vec<Vec<i8>>> = const { RefCell::new(Vec::new()) };
    static POOL_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Element types with a per-thread pool.
pub trait Pooled: Copy + Default + Sized + 'static {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

impl Pooled for i8 {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<i8>>) -> R) -> R {
        POOL_I8.with(|p| f(&mut p.borrow_mut()))
    }
}

impl Pooled for f32 {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<f32>>) -> R) -> R {
        POOL_F32.with(|p| f(&mut p.borrow_mut()))
    }
}

/// A buffer of `len` values borrowed from the pool; returned to it on drop.
pub struct Scratch<T: Pooled> {
    /// Initialised up to its full length (never truncated, so reuse never clears it again).
    buf: Vec<T>,
    len: usize,
}

impl<T: Pooled> Scratch<T> {
    /// `len` values of unspecified contents.
    pub fn new(len: usize) -> Self {
        // The largest pooled buffer first: the fewest regrowths when sizes differ.
        let mut buf = T::with_pool(|p| {
            let best = (0..p.len()).max_by_key(|&i| p[i].capacity());
            best.map(|i| p.swap_remove(i)).unwrap_or_default()
        });
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        Scratch { buf, len }
    }
}

impl<T: Pooled> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Pooled> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // A few buffers per thread at most (a GEMM needs two or three at once).
        T::with_pool(|p| {
            if p.len() < 4 {
                p.push(buf)
            }
        });
    }
}

/// An output of `len` values that its producer writes completely before anyone reads it,
/// allocated without the zero fill of `vec![0.0; len]` (a `memset` of every layer output).
/// Writers get `MaybeUninit` slots, so no
/// uninitialised value is ever read or referenced as a value.
pub struct Fill<T> {
    buf: Vec<std::mem::MaybeUninit<T>>,
}

impl<T: Copy> Fill<T> {
    pub fn new(len: usize) -> Self {
        let mut buf = Vec::with_capacity(len);
        // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `len`.
        unsafe { buf.set_len(len) };
        Fill { buf }
    }

    /// The slots to write.
    pub fn slots(&mut self) -> &mut [std::mem::MaybeUninit<T>] {
        &mut self.buf
    }

    /// The written values.
    ///
    /// # Safety
    /// Every slot must have been written.
    pub unsafe fn assume_init(self) -> Vec<T> {
        let mut buf = std::mem::ManuallyDrop::new(self.buf);
        // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller guarantees every slot is
        // initialised; the allocation is handed over whole (pointer, length, capacity).
        unsafe { Vec::from_raw_parts(buf.as_mut_ptr() as *mut T, buf.len(), buf.capacity()) }
    }
}
