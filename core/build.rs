//! `sqlx::migrate!` embeds `migrations/` at build time; rebuild when a migration is added or
//! changed, or a new migration would silently be missing from the binaries.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
