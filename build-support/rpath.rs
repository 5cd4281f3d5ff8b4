//! Shared build script for every package whose binaries or tests link DuckDB.
//!
//! DuckDB comes as a prebuilt shared library (see `.cargo/config.toml`); this embeds
//! its directory as the executables' run path so they start without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
