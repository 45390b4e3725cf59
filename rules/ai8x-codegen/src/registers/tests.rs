use super::*;
use crate::device::Device;
use crate::program::{Pool, PoolKind, Program};
use crate::test_layers::{bias, layer};

/// `(quadrant, register, value)` of layer `index`'s writes.
fn writes_of(program: &Program, index: usize) -> Vec<(u32, &'static str, u32)> {
    layer_registers(program)
        .unwrap()
        .into_iter()
        .filter(|w| w.layer == index)
        .map(|w| (w.quadrant, w.register.name(), w.value))
        .collect()
}

/// The first two layers of the §4.5 network (conv0, conv1).
fn spec_4_5_convs() -> Program {
    let mut conv0 = layer(Operator::Conv1d, [17, 8, 1], 32, [3, 1]);
    conv0.pad = 1;
    conv0.output_shift = -1;
    conv0.out_offset = 0xA000;
    conv0.bias = bias(0, 0, 32);
    let mut conv1 = layer(Operator::Conv1d, [32, 8, 1], 16, [3, 1]);
    conv1.pad = 1;
    conv1.output_shift = -2;
    conv1.pool = Some(Pool {
        kind: PoolKind::Max,
        size: [2, 1],
        stride: 2,
    });
    conv1.in_offset = 0xA000;
    conv1.kernel_offset = 12;
    conv1.bias = bias(1, 0, 16);
    Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![conv0, conv1],
    }
}

#[test]
fn conv1d_matches_the_izer_registers_of_the_spec_example() {
    // Golden values of §6.3 (izer output for the §4.5 network, layer 0).
    // RCNT = stop_row | step << 16 | 1 << 15 (pad 1): 7 | 1 << 16 | 0x8000.
    let expected_q0 = [
        ("RCNT", 0x0001_8007),
        ("CCNT", 0x0001_0000),
        ("STRIDE", 0x0000_0010),
        ("WPTR_BASE", 0x0000_2800),
        ("WPTR_MOFFS", 0x0000_8000),
        ("LCTL", 0x0080_2B20),
        ("LCTL2", 0x000F_8000),
        ("MCNT1", 0x0000_00F8),
        ("OCHAN", 0x0000_001F),
        ("ONED", 0x0000_1300),
        ("POST", 0x0002_3000),
        ("ENA", 0xFFFF_FFFF),
    ];
    let got = writes_of(&spec_4_5_convs(), 0);
    let q0: Vec<(&str, u32)> = got.iter().filter(|w| w.0 == 0).map(|w| (w.1, w.2)).collect();
    assert_eq!(q0, expected_q0);
    let q1: Vec<(&str, u32)> = got.iter().filter(|w| w.0 == 1).map(|w| (w.1, w.2)).collect();
    let mut expected_q1 = expected_q0.to_vec();
    expected_q1[5].1 = 0x0080_0B20;
    expected_q1[10].1 = 0x0002_2000;
    expected_q1[11].1 = 0x0001_0001;
    assert_eq!(q1, expected_q1);
}

#[test]
fn pooled_conv1d_matches_the_izer_registers_of_the_spec_example() {
    // §6.3 golden, layer 1: max pool 2/2 gives r_tail = 8 − ⌊6/2⌋·2 = 2, so
    // stop_row 6 and step (1 + (2 − 1)·1)·1 = 2; MCNT2 = koffs = 9·12/3·8.
    let got = writes_of(&spec_4_5_convs(), 1);
    let find = |q: u32, name: &str| got.iter().find(|w| w.0 == q && w.1 == name).map(|w| w.2);
    assert_eq!(find(0, "RCNT"), Some(0x0002_8006));
    assert_eq!(find(0, "PRCNT"), Some(1));
    assert_eq!(find(0, "PCCNT"), None);
    assert_eq!(find(0, "STRIDE"), Some(0x21));
    assert_eq!(find(0, "RPTR_BASE"), Some(0x2800));
    assert_eq!(find(0, "WPTR_BASE"), None);
    assert_eq!(find(0, "LCTL"), Some(0x0080_2BA0));
    assert_eq!(find(1, "LCTL"), Some(0x0080_0BA0));
    assert_eq!(find(0, "LCTL2"), Some(0x0007_8000));
    assert_eq!(find(0, "MCNT1"), Some(0x198));
    assert_eq!(find(0, "MCNT2"), Some(0x120));
    assert_eq!(find(0, "OCHAN"), Some(0xF));
    assert_eq!(find(0, "POST"), Some(0x0002_4000));
    assert_eq!(find(1, "POST"), Some(0x0002_5000));
    assert_eq!(find(1, "ENA"), Some(0xFFFF_FFFF));
}

#[test]
fn pooled_conv2d_matches_izer_output_for_a_3x3_layer() {
    // Layer 2 of ADI's svhn_tinierssd example as the izer configures it on
    // the MAX78002: 32×74×74, max pool 2×2/2, conv2d 3×3 pad 1, ReLU,
    // 64×37×37, kernels at column 32, bias in quadrant 1 at 0, shift −2.
    // RCNT: r_tail = 74 − ⌊72/2⌋·2 = 2, stop_row 72, step = (2 + 74)·1 = 76.
    // TPTR: W_p + 2·pad − 3 = 37 + 2 − 3 = 36.
    let mut conv = layer(Operator::Conv2d, [32, 74, 74], 64, [3, 3]);
    conv.pad = 1;
    conv.pool = Some(Pool {
        kind: PoolKind::Max,
        size: [2, 2],
        stride: 2,
    });
    conv.output_shift = -2;
    conv.in_offset = 0x2000;
    conv.out_offset = 0x1000;
    conv.kernel_offset = 32;
    conv.bias = bias(1, 0, 64);
    let mut program = Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![conv],
    };
    // The izer configures all four quadrants: another layer uses 2 and 3.
    let mut other = layer(Operator::Conv2d, [64, 4, 4], 4, [1, 1]);
    other.processors = u64::MAX;
    other.kernel_offset = 512;
    program.layers.push(other);
    let expected_q0 = [
        ("RCNT", 0x004C_8048),
        ("CCNT", 0x0002_8048),
        ("PRCNT", 1),
        ("PCCNT", 1),
        ("STRIDE", 0x21),
        ("WPTR_BASE", 0x400),
        ("WPTR_MOFFS", 0x8000),
        ("RPTR_BASE", 0x800),
        ("LCTL", 0x0088_2BA0),
        ("LCTL2", 0x001F_8000),
        ("MCNT1", 0x2F8),
        ("MCNT2", 0x100),
        ("OCHAN", 0x3F),
        ("TPTR", 0x24),
        ("POST", 0x0002_4000),
        ("ENA", 0xFFFF_FFFF),
    ];
    let got = writes_of(&program, 0);
    let quadrant = |q: u32| -> Vec<(&str, u32)> { got.iter().filter(|w| w.0 == q).map(|w| (w.1, w.2)).collect() };
    assert_eq!(quadrant(0), expected_q0);
    let mut expected_q1 = expected_q0.to_vec();
    expected_q1[8].1 = 0x0088_0BA0;
    expected_q1[14].1 = 0x0002_5000;
    assert_eq!(quadrant(1), expected_q1);
    let mut expected_q2 = expected_q0[..15].to_vec();
    expected_q2[8].1 = 0x0088_0BA0;
    assert_eq!(quadrant(2), expected_q2);
}

#[test]
fn flattened_linear_registers_follow_the_spec_formulas() {
    // fc0 of §4.5 (16×4 flattened to 64 → 16, kernels at column 20, bias in
    // quadrant 1 at 16), from §6.3 and the izer's flatten rule (its 1×1
    // view of the input, the pass count in LCTL2; reference cases
    // 000-conv1d, 028-flatten, 048-conv1d):
    // RCNT, CCNT: one 1×1 pixel per pass → 0x00010000.  WPTR_TOFFS = 1.
    // LCTL q0: 0x20 | 0x100 | ReLU 0x200 | 0x800 | bias quadrant 1 << 13.
    // LCTL2: (15·8) << 12 | (1·4 − 1) = 0x78003.
    // MCNT: koffs = 9·20/1·8 = 0x5A0, kc = 16·4 = 64, kl = 63·8 = 0x1F8.
    // POST: no flatten bit for fewer than 16 passes; q1 adds bias enable
    // 1 << 12 and offset 16.
    let mut fc0 = layer(Operator::Linear, [16, 4, 1], 16, [1, 1]);
    fc0.in_offset = 0;
    fc0.out_offset = 0xA000;
    fc0.kernel_offset = 20;
    fc0.bias = bias(1, 16, 16);
    let mut program = spec_4_5_convs();
    program.layers.push(fc0);
    let expected_q0 = [
        ("RCNT", 0x0001_0000),
        ("CCNT", 0x0001_0000),
        ("STRIDE", 0x10),
        ("WPTR_BASE", 0x2800),
        ("WPTR_TOFFS", 1),
        ("WPTR_MOFFS", 0x8000),
        ("LCTL", 0x2B20),
        ("LCTL2", 0x0007_8003),
        ("MCNT1", 0x798),
        ("MCNT2", 0x5A0),
        ("OCHAN", 0x3F),
        ("ONED", 0x100),
        ("ENA", 0xFFFF_FFFF),
    ];
    let got = writes_of(&program, 2);
    let quadrant = |q: u32| -> Vec<(&str, u32)> { got.iter().filter(|w| w.0 == q).map(|w| (w.1, w.2)).collect() };
    assert_eq!(quadrant(0), expected_q0);
    // Quadrant 1 has no processor of fc0: no ENA.
    let mut expected_q1 = expected_q0[..12].to_vec();
    expected_q1[6].1 = 0xB20;
    expected_q1.push(("POST", 0x1010));
    assert_eq!(quadrant(1), expected_q1);
}

#[test]
fn register_addresses_follow_the_max78002_layer_map() {
    let writes = layer_registers(&spec_4_5_convs()).unwrap();
    let rcnt_q1_l1 = writes
        .iter()
        .find(|w| w.layer == 1 && w.quadrant == 1 && w.register == LayerRegister::Rcnt)
        .unwrap();
    // §1.1: 0x51100000 + 0x1000000·q + 4·r + 0x100·L.
    assert_eq!(rcnt_q1_l1.address, 0x5210_0104);
}

#[test]
fn max78000_uses_its_own_register_formulas() {
    let mut program = spec_4_5_convs();
    program.device = Device::Max78000;
    program.layers[0].out_offset = 0x4000;
    program.layers[1].in_offset = 0x4000;
    let got = writes_of(&program, 1);
    let find = |name: &str| got.iter().find(|w| w.0 == 0 && w.1 == name).map(|w| w.2);
    // RCNT = (H − 1 + 2·pad) | pad << 16; STRIDE = s − 1; MCNT = koffs << 16 | (koffs + kl).
    assert_eq!(find("RCNT"), Some(9 | 1 << 16));
    assert_eq!(find("STRIDE"), Some(1));
    assert_eq!(find("MCNT1"), Some(0x120 << 16 | 0x198));
    assert_eq!(find("MCNT2"), None);
    assert_eq!(find("OCHAN"), None);
    assert_eq!(find("LCTL"), Some(0x2BA0));
    assert_eq!(find("LCTL2"), Some(0x78 << 8));
    assert_eq!(find("RPTR_BASE"), Some(0x1000));
}

#[test]
fn sub_8_bit_weights_scale_the_mask_count_and_the_span() {
    // As the izer writes a 4-bit layer (reference case 032-elt-add, layer
    // 2): kl = (kc − 1)·4, LCTL2's span (15·4) << 12, POST width code 3 and
    // shift output_shift + 4.
    let mut program = spec_4_5_convs();
    program.layers[1].weight_bits = 4;
    let got = writes_of(&program, 1);
    let find = |name: &str| got.iter().find(|w| w.0 == 0 && w.1 == name).map(|w| w.2);
    assert_eq!(find("MCNT1"), Some(0x120 + 15 * 4));
    assert_eq!(find("MCNT2"), Some(0x120));
    assert_eq!(find("LCTL2"), Some((15 * 4) << 12));
    let output_shift = program.layers[1].output_shift + 4;
    assert!(output_shift >= 0);
    assert_eq!(
        find("POST").map(|p| p & 0x00E3_E000),
        Some(3 << 22 | (output_shift as u32) << 13)
    );
}

#[test]
fn weight_widths_other_than_1_2_4_8_and_narrow_flatten_are_refused() {
    let mut program = spec_4_5_convs();
    program.layers[1].weight_bits = 3;
    let err = layer_registers(&program).unwrap_err();
    assert!(matches!(err, CodegenError::Invalid { layer: 1, .. }), "{err}");
    let mut fc0 = layer(Operator::Linear, [16, 4, 1], 16, [1, 1]);
    fc0.weight_bits = 2;
    let mut program = spec_4_5_convs();
    program.layers.push(fc0);
    let err = layer_registers(&program).unwrap_err();
    assert!(matches!(err, CodegenError::Unsupported { layer: 2, .. }), "{err}");
}

#[test]
fn a_processor_map_with_the_wrong_popcount_is_rejected() {
    let mut program = spec_4_5_convs();
    program.layers[0].processors = 0xffff;
    let err = layer_registers(&program).unwrap_err();
    assert!(err.to_string().contains("need 17 processors"), "{err}");
}

/// kflow's baseline pooling stage: 48 channels × 8 (1-D) from processors
/// 0..47, max pool 2/2, read at 0xA000, written at 0.
fn baseline_pool(device: Device) -> Program {
    let mut pool = crate::test_layers::passthrough([48, 8, 1], PoolKind::Max, [2, 1], 2);
    pool.in_offset = device.instance_bytes() / 2 / 0x1000 * 0x1000;
    Program {
        device,
        input_format: DataFormat::Hwc,
        layers: vec![pool],
    }
}

#[test]
fn passthrough_max_pool_registers_follow_the_spec_formulas() {
    // §6.3 (MAX78002) with the izer's passthrough rules (max7800x.py;
    // reference cases 002-pool, 082-pool1d, 014-pool-max78000):
    // RCNT: r_tail = H − ⌊(H − P)/s⌋·s = 8 − 3·2 = 2, stop_row = 6;
    //   c_tail = W − ⌊(W − P_w)/s⌋·s = 1; step = (c_tail + (s − 1)·W)·in_expand = 2
    //   → 6 | 2 << 16; no pad bits.
    // CCNT: (W − c_tail) | c_tail << 16 = 0x10000.  PRCNT = P − 1 = 1.
    // STRIDE: (s − 1) | (s·in_expand) << 4 = 0x21.  RPTR_BASE = 0xA000/4.
    // WPTR_BASE: each quadrant's first output instance << 15: 0, 4, 8.
    // WPTR_TOFFS: four instances (1 << 15) for more than 4 processors; no
    //   WPTR_MOFFS, LCTL2 or mask enables (operator layers only).
    // LCTL: 0x20 | pool 0x80 | max 0x100 | 0x800 → 0x9A0.
    // OCHAN = ONED[3:0] = time slots of the widest quadrant − 1 = 15/4 = 3.
    // ONED: 1 << 8 | 3.  POST: passthrough 3 << 24, shift 0, no bias.
    // ENA: the quadrant's processor map, quadrants 0, 1, 2.
    let expected = |q: u32| {
        let mut regs = vec![
            ("RCNT", 0x0002_0006),
            ("CCNT", 0x0001_0000),
            ("PRCNT", 1),
            ("STRIDE", 0x21),
            ("WPTR_TOFFS", 0x8000),
            ("RPTR_BASE", 0x2800),
            ("LCTL", 0x9A0),
            ("OCHAN", 3),
            ("ONED", 0x103),
            ("POST", 0x0300_0000),
            ("ENA", 0xFFFF),
        ];
        if q > 0 {
            regs.insert(4, ("WPTR_BASE", (4 * q) << 15));
        }
        regs
    };
    let got = writes_of(&baseline_pool(Device::Max78002), 0);
    for q in 0..3 {
        let quadrant: Vec<(&str, u32)> = got.iter().filter(|w| w.0 == q).map(|w| (w.1, w.2)).collect();
        assert_eq!(quadrant, expected(q), "quadrant {q}");
    }
    assert!(got.iter().all(|w| w.0 < 3));
}

#[test]
fn passthrough_registers_on_the_max78000() {
    // §6.3 MAX78000: RCNT = (H − 1 + 2·pad) | pad << 16 = 7; CCNT = W − 1 = 0;
    // STRIDE = s − 1; WPTR_TOFFS = four instances = 1 << 13 (as in
    // reference case 014-pool-max78000); no MCNT/OCHAN.
    let got = writes_of(&baseline_pool(Device::Max78000), 0);
    let q0: Vec<(&str, u32)> = got.iter().filter(|w| w.0 == 0).map(|w| (w.1, w.2)).collect();
    assert_eq!(
        q0,
        [
            ("RCNT", 7),
            ("PRCNT", 1),
            ("STRIDE", 1),
            ("WPTR_TOFFS", 0x2000),
            ("RPTR_BASE", 0x1000),
            ("LCTL", 0x9A0),
            ("ONED", 0x103),
            ("POST", 0x0300_0000),
            ("ENA", 0xFFFF),
        ]
    );
}

#[test]
fn passthrough_2d_avg_pool_registers_follow_the_spec_formulas() {
    // 16 × 8×8, avg pool 2×2/2, written at 0x100 (MAX78002):
    // RCNT: r_tail = 8 − 3·2 = 2, stop_row 6, c_tail = 2,
    //   step = (2 + 1·8)·1 = 10 → 0x000A0006.
    // CCNT: (8 − 2) | 2 << 16.  PRCNT = PCCNT = 1.
    // LCTL: avg pool clears bit 8 → 0x20 | 0x80 | 0x800 = 0x8A0.
    // WPTR_BASE = 0x100/4; OCHAN 3 and ONED 0x103 for 16 processors.
    let mut pool = crate::test_layers::passthrough([16, 8, 8], PoolKind::Avg, [2, 2], 2);
    pool.out_offset = 0x100;
    let program = Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![pool],
    };
    let got = writes_of(&program, 0);
    let q0: Vec<(&str, u32)> = got.iter().map(|w| (w.1, w.2)).collect();
    assert_eq!(
        q0,
        [
            ("RCNT", 0x000A_0006),
            ("CCNT", 0x0002_0006),
            ("PRCNT", 1),
            ("PCCNT", 1),
            ("STRIDE", 0x21),
            ("WPTR_BASE", 0x40),
            ("WPTR_TOFFS", 0x8000),
            ("LCTL", 0x8A0),
            ("OCHAN", 3),
            ("ONED", 0x103),
            ("POST", 0x0300_0000),
            ("ENA", 0xFFFF),
        ]
    );
}

#[test]
fn passthrough_layers_that_the_spec_does_not_describe_are_refused() {
    type Edit = fn(&mut Layer);
    let cases: [(Edit, &str); 10] = [
        (|l| l.activation = Activation::Relu, "cannot have activation Relu"),
        (|l| l.output_shift = -1, "cannot have output_shift -1"),
        (|l| l.weights = vec![0; 48], "cannot have 48 weights"),
        (|l| l.bias = bias(0, 0, 48), "cannot have a bias"),
        (|l| l.output_width = OutputWidth::Bits32, "cannot have a 32-bit output"),
        (|l| l.weight_bits = 4, "cannot have weight_bits 4"),
        (|l| l.kernel = [3, 1], "cannot have kernel [3, 1]"),
        (|l| l.pad = 1, "cannot have pad 1"),
        (|l| l.out_channels = 32, "cannot have 32 output channels for 48 inputs"),
        (
            |l| l.output_processors = 0xffff_ffff_ffff << 4,
            "output map must equal its packed input map",
        ),
    ];
    for (edit, message) in cases {
        let mut program = baseline_pool(Device::Max78002);
        edit(&mut program.layers[0]);
        let err = layer_registers(&program).unwrap_err().to_string();
        assert!(err.contains(message), "expected `{message}` in `{err}`");
    }
}

#[test]
fn multi_pass_passthrough_counts_its_passes_as_the_izer() {
    // 96 channels on 48 processors, two passes: LCTL2 = in_expand − 1 and
    // MCNT2 = (out_expand − 1)·8, as in reference cases 003-pool-big and
    // 051-pool-big; the row step and stride advance two words per pixel.
    let mut program = baseline_pool(Device::Max78002);
    program.layers[0] = crate::test_layers::passthrough([96, 8, 1], PoolKind::Max, [2, 1], 2);
    program.layers[0].processors = 0xffff_ffff_ffff;
    program.layers[0].output_processors = 0xffff_ffff_ffff;
    let got = writes_of(&program, 0);
    let find = |name: &str| got.iter().find(|w| w.0 == 0 && w.1 == name).map(|w| w.2);
    assert_eq!(find("LCTL2"), Some(1));
    assert_eq!(find("MCNT2"), Some(8));
    assert_eq!(find("RCNT"), Some(0x0004_0006));
    assert_eq!(find("STRIDE"), Some(0x41));
}

#[test]
fn passthrough_is_none_or_passthrough_in_serde() {
    for text in ["\"none\"", "\"passthrough\""] {
        assert_eq!(serde_json::from_str::<Operator>(text).unwrap(), Operator::Passthrough);
    }
    assert_eq!(
        serde_json::to_string(&Operator::Passthrough).unwrap(),
        "\"passthrough\""
    );
}

/// Layers 1–3 of reference case 008-elt-add: a copy and a 1×1 conv2d of
/// 12 channels × 8×8 written interleaved (write gap 1), then their sum.
fn elt_add() -> Program {
    let mut copy = crate::test_layers::passthrough([12, 8, 8], PoolKind::Max, [1, 1], 1);
    copy.pool = None;
    copy.in_offset = 0x1000;
    copy.out_offset = 0x2000;
    copy.write_gap = 1;
    let mut conv = layer(Operator::Conv2d, [12, 8, 8], 12, [1, 1]);
    conv.activation = Activation::None;
    conv.in_offset = 0x1000;
    conv.out_offset = 0x2004;
    conv.write_gap = 1;
    conv.kernel_offset = 4;
    let mut add = crate::test_layers::passthrough([12, 8, 8], PoolKind::Max, [1, 1], 1);
    add.pool = None;
    add.in_offset = 0x2000;
    add.out_offset = 0x3000;
    add.eltwise = Some(crate::program::Eltwise {
        op: crate::program::EltwiseOp::Add,
        operands: 2,
        pool_first: true,
    });
    Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![copy, conv, add],
    }
}

#[test]
fn element_wise_registers_match_the_izer_reference() {
    // The izer's values for 008-elt-add (tests/data/izer-reference of
    // kflow-ai8x): the sum reads two interleaved words per pixel.
    let program = elt_add();
    let q0 = |index: usize| -> Vec<(&str, u32)> {
        writes_of(&program, index)
            .into_iter()
            .filter(|w| w.0 == 0)
            .map(|w| (w.1, w.2))
            .collect()
    };
    assert_eq!(
        q0(2),
        [
            ("RCNT", 0x0002_0007),
            ("CCNT", 0x0001_0007),
            ("STRIDE", 0x20),
            ("WPTR_BASE", 0xC00),
            ("WPTR_TOFFS", 0x8000),
            ("RPTR_BASE", 0x800),
            ("LCTL", 0x920),
            ("OCHAN", 2),
            ("ONED", 0x0004_6002),
            ("POST", 0x0100_0000),
            ("ENA", 0xFFF),
        ]
    );
    // The producers skip one word after each of theirs.
    let lctl2 = |index: usize| q0(index).into_iter().find(|w| w.0 == "LCTL2").map(|w| w.1);
    assert_eq!(lctl2(0), Some(0x10));
    assert_eq!(lctl2(1), Some(0x0005_8010));
}

#[test]
fn an_output_layer_with_a_write_gap_is_unloaded_every_other_word() {
    let mut program = elt_add();
    program.layers.truncate(2);
    let generated = crate::generate(&program).unwrap();
    let c = String::from_utf8(generated.files["cnn_model.c"].clone()).unwrap();
    // §5.2: one pass, write_gap 1: pixel k's word is 8 bytes further.
    assert!(c.contains("CNN_READ32(cnn_output_addr[c] + 8u * px)"), "{c}");
}

#[test]
fn a_32_bit_output_layer_with_a_write_gap_is_refused() {
    let mut program = elt_add();
    program.layers.truncate(2);
    program.layers[1].output_width = OutputWidth::Bits32;
    let err = layer_registers(&program).unwrap_err();
    assert!(
        err.to_string().contains("32-bit output layer cannot have a write gap"),
        "{err}"
    );
}

#[test]
fn a_passthrough_layer_packed_above_processor_0_is_generated() {
    let mut pool = crate::test_layers::passthrough([8, 4, 4], PoolKind::Max, [2, 2], 2);
    pool.processors = 0xff00;
    pool.output_processors = 0xff00;
    let mut conv = layer(Operator::Conv2d, [8, 2, 2], 8, [1, 1]);
    conv.processors = 0xff00;
    let program = Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![pool, conv],
    };
    assert!(layer_registers(&program).is_ok());
}
