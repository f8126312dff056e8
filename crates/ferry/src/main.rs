// glibc malloc spent about a quarter of a run's CPU in profiles (arena locks, consolidation
// of the many small JSON values a run allocates and frees); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferry::main()
}
