//! The Python package (`python/`, ctypes over this library) and its pytest tests, against a
//! relay on a loopback port. Skipped with one line where there is no Python with pytest,
//! unless `PEERMSG_REQUIRE_PYTHON` is set (CI).

mod support;

use std::process::Command;

/// A Python that has pytest: `python3` on the path, else Debian's.
fn python_with_pytest() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-m", "pytest", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn the_python_package_passes_its_tests_against_a_relay() {
    let Some(python) = python_with_pytest() else {
        assert!(
            std::env::var_os("PEERMSG_REQUIRE_PYTHON").is_none(),
            "PEERMSG_REQUIRE_PYTHON is set but no Python has pytest"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the Python package's tests (no python3 with pytest)"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = support::relay(&runtime);
    let package = support::crate_dir().join("python");
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&package)
        .env("PYTHONPATH", &package)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(
            "PEERMSG_LIB",
            support::library_dir().join("libpeermsg_ffi.so"),
        )
        .env("PEERMSG_RELAY", &relay)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("5 passed"), "{stdout}");
}
