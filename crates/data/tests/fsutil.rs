//! The atomic-write helper on paths that are not regular files.

use lowprec_data::fsutil::write_atomic;
use std::os::unix::fs::FileTypeExt;

#[test]
fn a_pipe_is_written_in_place_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    write_atomic(&fifo, |w| w.write_all(b"through the pipe")).unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(ft.is_fifo(), "the pipe was replaced by a {ft:?}");
}

#[test]
fn a_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = write_atomic(dir.path(), |w| w.write_all(b"x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
}
