//! Compiles containerd's API definitions (vendored under proto/, from containerd's api module)
//! with protox, a protobuf compiler in Rust, so building thaw needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const API: &str = "github.com/containerd/containerd/api";
    let files: Vec<String> = [
        "services/snapshots/v1/snapshots.proto",
        "services/content/v1/content.proto",
        "services/images/v1/images.proto",
        "services/leases/v1/leases.proto",
        "types/mount.proto",
        "types/descriptor.proto",
    ]
    .iter()
    .map(|f| format!("{API}/{f}"))
    .collect();
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
