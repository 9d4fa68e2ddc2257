//! What the tests of the C interface share: a relay on a loopback port, a Rust user at the
//! other end, the C compiler and the library's files.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

use peermsg::client::ClientConfig;
use peermsg_tokio::{serve_with, ClientEvents, ClientHandle, Extras, OpenAccess, ServerConfig};

/// A relay on a loopback port, on `runtime`, served for as long as the runtime lives.
pub fn relay(runtime: &tokio::runtime::Runtime) -> String {
    let (addr, stop) = relay_with(runtime, "127.0.0.1:0", Extras::default());
    std::mem::forget(stop); // never stopped
    addr
}

/// A relay on `addr` (port 0: any) with `extras` (TLS), on `runtime`; its address, and
/// what stops it (sent or dropped).
pub fn relay_with(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    extras: Extras,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let config = ServerConfig::default();
        tokio::spawn(serve_with(listener, config, OpenAccess, extras, shutdown));
        (addr, stop)
    })
}

/// A user of the tokio client at `relay`, keeping files in `dir`.
pub fn rust_user(
    runtime: &tokio::runtime::Runtime,
    relay: &str,
    user: &str,
    dir: &Path,
) -> (ClientHandle, ClientEvents) {
    runtime.block_on(async {
        ClientHandle::builder(user)
            .server(peermsg_tokio::Server::Tcp(relay.into()))
            .config(ClientConfig::default())
            .files_to(dir)
            .connect()
            .await
            .unwrap()
    })
}

/// The folder holding `libpeermsg_ffi.so` and `.a` (`target/debug`; the test binary is in
/// its `deps`), built first: `cargo test` builds only what tests link (the rlib), so the
/// shared and static libraries are built here, once per test program.
pub fn library_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    // The library is built in the test's own profile (`target/<profile>/deps/<test>`), so
    // `cargo test --release` links the release library it looks for.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    BUILT.get_or_init(|| {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "peermsg-ffi", "--lib"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.current_dir(crate_dir()).status().unwrap();
        assert!(status.success(), "cargo build -p peermsg-ffi failed");
    });
    dir
}

/// The crate's folder.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The C compiler, or `None` (with one line saying the tests are skipped) where there is
/// none, unless `PEERMSG_REQUIRE_C` is set (CI): then it must be there.
pub fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PEERMSG_REQUIRE_C").is_none(),
            "PEERMSG_REQUIRE_C is set but there is no C compiler ({cc})"
        );
        // One line for all the C programs' tests.
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the C programs' tests (no C compiler: {cc})"
            );
        });
        return None;
    }
    Some(cc)
}

/// What `program` printed, once it ran to success (else the test fails with its output).
pub fn succeeded(program: &mut Command) -> String {
    let output = program.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// How the library is linked into a C program.
#[derive(Clone, Copy)]
pub enum Link {
    /// `libpeermsg_ffi.a`, into the program.
    Static,
    /// `libpeermsg_ffi.so`, found beside the program's build.
    Shared,
}

/// Compiles `c/<name>.c` against the header and the library, into the test's temporary
/// folder; the program's path.
pub fn compile(cc: &str, name: &str, link: Link) -> PathBuf {
    let lib = library_dir();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-{name}"));
    let mut cmd = Command::new(cc);
    cmd.args([
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
    ])
    .arg(crate_dir().join(format!("c/{name}.c")))
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg("-o")
    .arg(&out);
    match link {
        Link::Static => cmd.arg(lib.join("libpeermsg_ffi.a")),
        Link::Shared => cmd
            .arg(format!("-L{}", lib.display()))
            .arg("-lpeermsg_ffi")
            .arg(format!("-Wl,-rpath,{}", lib.display())),
    };
    cmd.args(["-lpthread", "-ldl", "-lm"]);
    let status = cmd.status().unwrap();
    assert!(status.success(), "compiling {name}.c failed");
    out
}

/// A command that runs `program`: under valgrind when `PEERMSG_VALGRIND` is set (CI), which
/// then fails the run on any memory error or leak of the C program's or the library's.
pub fn run(program: &Path) -> Command {
    if std::env::var_os("PEERMSG_VALGRIND").is_some() {
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}
