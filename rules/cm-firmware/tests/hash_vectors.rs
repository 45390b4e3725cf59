//! The firmware's BLAKE3 and CRC-32, compiled with the host's gcc, against
//! the `blake3` and `crc32fast` crates.

use std::process::Command;

use kflow_cm_firmware::Target;

/// Prints, for the file argv[1]: the BLAKE3 digest in hex, then the CRC-32
/// of the whole file (fed in uneven pieces, as frames arrive) in hex.
const DRIVER: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include "blake3.h"
#include "crc32.h"

int main(int argc, char **argv)
{
    FILE *f;
    long len;
    uint8_t *data, digest[32];
    uint32_t crc = 0, at = 0, step = 1;
    int i;
    if (argc != 2 || !(f = fopen(argv[1], "rb"))) return 2;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(len ? (size_t)len : 1);
    if (!data || fread(data, 1, (size_t)len, f) != (size_t)len) return 3;
    kf_blake3(data, (uint32_t)len, digest);
    for (i = 0; i < 32; i++) printf("%02x", digest[i]);
    kf_crc32_init();
    while (at < (uint32_t)len) {
        uint32_t n = (uint32_t)len - at < step ? (uint32_t)len - at : step;
        crc = kf_crc32_update(crc, data + at, n);
        at += n;
        step = step * 3 + 1;
    }
    printf(" %08x\n", crc);
    return 0;
}
"#;

#[test]
fn blake3_and_crc32_match_the_rust_crates() {
    let dir = tempfile::tempdir().unwrap();
    kflow_cm_firmware::write_sources(dir.path(), Target::Mps2An386).unwrap();
    std::fs::write(dir.path().join("driver.c"), DRIVER).unwrap();
    let out = Command::new("gcc")
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(["driver.c", "blake3.c", "crc32.c", "-o", "driver"])
        .current_dir(dir.path())
        .output()
        .expect("host gcc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lengths = [
        0usize,
        1,
        2,
        63,
        64,
        65,
        127,
        128,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        3072,
        3073,
        4096,
        5000,
        8193,
        31_744,
        100_000,
        1_048_576,
        1_048_577 + 4096,
    ];
    for len in lengths {
        // BLAKE3's test-vector input pattern: byte i is i mod 251.
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("in.bin");
        std::fs::write(&file, &data).unwrap();
        let out = Command::new(dir.path().join("driver")).arg(&file).output().unwrap();
        assert!(out.status.success());
        let expected = format!("{} {:08x}\n", blake3::hash(&data).to_hex(), crc32fast::hash(&data));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{len} bytes");
    }
}

#[test]
fn host_sources_compile_warning_free() {
    let dir = tempfile::tempdir().unwrap();
    kflow_cm_firmware::write_sources(dir.path(), Target::Mps2An386).unwrap();
    for source in kflow_cm_firmware::HOST_SOURCES {
        let out = Command::new("gcc")
            .args([
                "-std=c99",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-c",
                source,
                "-o",
            ])
            .arg(format!("{source}.o"))
            .current_dir(dir.path())
            .output()
            .expect("host gcc");
        assert!(
            out.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_elf_is_the_same_from_any_directory_and_compiler_errors_come_back() {
    if std::process::Command::new(kflow_cm_firmware::COMPILER)
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("KFLOW_REQUIRE_QEMU").is_some() {
            panic!("{} missing and KFLOW_REQUIRE_QEMU is set", kflow_cm_firmware::COMPILER);
        }
        println!("skipped: {} not installed", kflow_cm_firmware::COMPILER);
        return;
    }
    let h = "#include <stdint.h>\n#define KFLOW_INPUT_LEN 3\n#define KFLOW_OUTPUT_LEN 3\n#define KFLOW_OUTPUT_INT32 0\n#define KFLOW_WEIGHTS_BYTES 1\n#define KFLOW_MODEL_ID \"copy\"\nint kflow_check_weights(const void *w, uint32_t len);\nint kflow_infer(const void *w, const int8_t *in, void *out);\n";
    let c = "#include \"model.h\"\nint kflow_check_weights(const void *w, uint32_t len) { (void)w; return len != 1; }\nint kflow_infer(const void *w, const int8_t *in, void *out) { int8_t *o = out; (void)w; o[0] = in[2]; o[1] = in[1]; o[2] = in[0]; return 0; }\n";
    let a = kflow_cm_firmware::build(Target::Mps2An386, c, h).unwrap();
    let b = kflow_cm_firmware::build(Target::Mps2An386, c, h).unwrap();
    // Not assert_eq: a difference would print two ELF images.
    assert!(a.elf == b.elf, "two builds of the same sources differ");
    assert_eq!((&a.version, &a.model_id), (&b.version, &b.model_id));
    assert_eq!(&a.elf[..4], b"\x7fELF");
    assert_eq!(a.warnings, "");
    assert_eq!(a.version, format!("kflow-cm4 {} model copy", env!("CARGO_PKG_VERSION")));
    // The Cortex-M7's is another program.
    let m7 = kflow_cm_firmware::build(Target::Mps2An500, c, h).unwrap();
    assert!(m7.elf != a.elf, "the Cortex-M7 build is the Cortex-M4's");
    assert_eq!(
        m7.version,
        format!("kflow-cm7 {} model copy", env!("CARGO_PKG_VERSION"))
    );
    let err = kflow_cm_firmware::build(Target::Mps2An386, "int kflow_infer(void) { return x; }\n", h).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, kflow_cm_firmware::FirmwareError::Compiler { .. }),
        "{text}"
    );
    assert!(text.contains("model.c"), "{text}");
    assert!(matches!(
        kflow_cm_firmware::build(Target::Mps2An386, c, "#define KFLOW_INPUT_LEN 3\n"),
        Err(kflow_cm_firmware::FirmwareError::NoModelId)
    ));
}
