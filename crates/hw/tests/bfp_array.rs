//! The BFP array model: logic falls with the mantissa width, the cycle count is the padded MAC
//! count over the array, and the same logic buys a wider array at a smaller width.

use lowprec_hw::bfp_array::{estimate, same_logic, BfpArray, GemmLayer, Operand};

fn arr() -> BfpArray {
    BfpArray {
        c_vector: 16,
        k_vector: 64,
        fmax_mhz: 300.0,
        device: "test".into(),
    }
}

fn sm(width: u32) -> Operand {
    Operand {
        width,
        twos_complement: false,
    }
}

#[test]
fn logic_falls_with_width_and_cycles_count_padded_macs() {
    let layers = [GemmLayer {
        cin: 20,
        cout: 70,
        taps: 9,
        pixels: 100,
        in_pixels: 100,
    }];
    let fp16 = estimate(&arr(), sm(12), sm(12), &layers);
    let int8 = estimate(
        &arr(),
        Operand {
            width: 8,
            twos_complement: true,
        },
        Operand {
            width: 8,
            twos_complement: true,
        },
        &layers,
    );
    let int4 = estimate(&arr(), sm(5), sm(4), &layers);
    assert!(fp16.luts > int8.luts && int8.luts > int4.luts);
    // 16 x 16 sign-magnitude multiplier: 11 x 11 partial products + 23 negation bits
    assert_eq!(fp16.multiplier_luts, 16.0 * (121.0 + 23.0));
    // cycles: ceil(20/16) * ceil(70/64) * 9 * 100 = 3600 at 300 MHz
    assert!((fp16.images_per_second - 300e6 / 3600.0).abs() < 1e-6);
    assert_eq!(fp16.images_per_second, int4.images_per_second);
    let (k, e) = same_logic(&arr(), sm(5), sm(4), &layers, fp16.luts);
    assert!(k > 64 && e.luts <= fp16.luts);
    assert!(e.images_per_second >= fp16.images_per_second);
}
