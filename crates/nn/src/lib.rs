//! Layers and models: explicit forward/backward functions over flat buffers.
