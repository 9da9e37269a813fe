//! Data sets: MNIST (IDX), CIFAR-10 (binary records and image folders/tarballs), batching.
