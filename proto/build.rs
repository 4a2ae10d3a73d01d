//! Generates the tonic/prost code for `proto/meta.proto` with a vendored `protoc`,
//! so no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto/meta.proto");
    tonic_prost_build::configure().compile_with_config(config, &["proto/meta.proto"], &["proto"])?;
    Ok(())
}
