//! Small shape helpers.

/// Product of a shape's dimensions.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `[batch] ++ example`.
pub fn with_batch(batch: usize, example: &[usize]) -> Vec<usize> {
    let mut s = Vec::with_capacity(example.len() + 1);
    s.push(batch);
    s.extend_from_slice(example);
    s
}
