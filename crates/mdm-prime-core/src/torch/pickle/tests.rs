//! Hand-written pickles: values, sharing, refusals, bounds.

use super::*;

fn read(bytes: &[u8]) -> Result<Value> {
    load(bytes, &AllowList::new())
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

#[test]
fn plain_values_read_as_python_builds_them() {
    // {'a': 1, 'b': [2, 3.0], 'c': (None, True), 'd': -2, 'e': b'\x00\xff'} at protocol 2
    // (pickletools-annotated by hand).
    let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(K\x02".to_vec();
    p.extend(b"G@\x08\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00cN\x88\x86");
    p.extend(b"X\x01\x00\x00\x00dJ\xfe\xff\xff\xff");
    p.extend(b"X\x01\x00\x00\x00ec_codecs\nencode\nX\x03\x00\x00\x00\x00\xc3\xbf");
    p.extend(b"X\x06\x00\x00\x00latin1\x86Ru.");
    let v = read(&p).unwrap();
    let expect = Value::Dict(vec![
        (s("a"), Value::Int(1)),
        (s("b"), Value::List(vec![Value::Int(2), Value::Float(3.0)])),
        (s("c"), Value::Tuple(vec![Value::None, Value::Bool(true)])),
        (s("d"), Value::Int(-2)),
        (s("e"), Value::Bytes(vec![0, 255])),
    ]);
    assert_eq!(v, expect);
}

#[test]
fn long1_reads_two_complement_and_beyond_64_bits_as_the_nearest_float() {
    // 2**40 = 0x01_0000_0000_00 (6 bytes); -(2**62) = 0xc0 << 56 (8 bytes).
    assert_eq!(
        read(b"\x8a\x06\x00\x00\x00\x00\x00\x01.").unwrap(),
        Value::Int(1 << 40)
    );
    let v = read(b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\xc0.").unwrap();
    assert_eq!(v, Value::Int(-(1 << 62)));
    // 2**63 needs 9 bytes (a zero sign byte): out of range for i64, read as a float.
    let v = read(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").unwrap();
    assert_eq!(v, Value::Float(9223372036854775808.0));
    // int(1e30) (transformers' VERY_LARGE_INTEGER), as pickle.dumps writes it: 13 bytes.
    let big = b"\x8a\x0d\x00\x00\x00\x00\x00\x00\x75\x46\xd0\x9c\x2c\x9f\x0c.";
    assert_eq!(read(big).unwrap(), Value::Float(1e30));
    // -(2**64): 9 bytes, negative.
    let v = read(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xff.").unwrap();
    assert_eq!(v, Value::Float(-18446744073709551616.0));
    // -1 written with a redundant 9th sign byte still fits.
    assert_eq!(
        read(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.").unwrap(),
        Value::Int(-1)
    );
    assert_eq!(read(b"\x8a\x00.").unwrap(), Value::Int(0));
}

#[test]
fn memoised_containers_are_shared_like_python_objects() {
    // l = []; memo; then APPENDS 1, 2; then (l, l): both references see [1, 2].
    let v = read(b"\x80\x02]q\x00(K\x01K\x02eh\x00\x86.").unwrap();
    let l = Value::List(vec![Value::Int(1), Value::Int(2)]);
    assert_eq!(v, Value::Tuple(vec![l.clone(), l]));
}

#[test]
fn code_execution_globals_are_refused_by_name() {
    let e = read(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00echo\x85R.").unwrap_err();
    assert_eq!(e, PickleError::Refused("posix.system".into()));
    assert!(e.to_string().contains("`posix.system`"), "{e}");
    let e = read(b"\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
    assert_eq!(e, PickleError::Refused("builtins.eval".into()));
    // Classes that are fine as data elsewhere still need to be named.
    let e = read(b"\x80\x02comegaconf\nDictConfig\n.").unwrap_err();
    assert_eq!(e, PickleError::Refused("omegaconf.DictConfig".into()));
    let allow = AllowList::new().class("omegaconf.DictConfig");
    let v = load(
        b"\x80\x02comegaconf\nDictConfig\n)\x81}X\x01\x00\x00\x00kK\x07sb.",
        &allow,
    )
    .unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(o.class, "omegaconf.DictConfig");
    assert_eq!(v["k"].as_int(), Some(7));
    // TorchScript module classes only where the caller says the pickle is TorchScript.
    assert!(read(b"c__torch__.M\nM\n)\x81.").is_err());
    assert!(
        load(
            b"c__torch__.M\nM\n)\x81.",
            &AllowList::new().torchscript(true)
        )
        .is_ok()
    );
}

#[test]
fn a_value_that_contains_itself_is_refused() {
    // l = []; l.append(l)
    assert_eq!(read(b"]q\x00h\x00a.").unwrap_err(), PickleError::TooDeep);
}

#[test]
fn doubling_through_the_memo_stops_at_the_budget() {
    // x = None; 40 times: x = (x, x). 162 bytes that would expand to 2^40 nodes.
    let mut p = b"N".to_vec();
    for _ in 0..40 {
        p.extend(b"q\x00h\x00\x86");
    }
    p.push(b'.');
    assert!(matches!(read(&p), Err(PickleError::TooLarge(_))));
}

#[test]
fn lengths_past_the_end_fail_before_allocating() {
    for p in [
        &b"X\xff\xff\xff\xff"[..],
        b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x8b\xff\xff\xff\x7f",
        b"cos\nsys",
    ] {
        assert!(
            matches!(read(p), Err(PickleError::Truncated { .. })),
            "{p:?}"
        );
    }
}

#[test]
fn every_prefix_and_stack_misuse_is_an_error_not_a_panic() {
    let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x02G@\x08\x00\x00\x00\x00\x00\x00eu.";
    assert!(read(p).is_ok());
    for n in 0..p.len() {
        assert!(read(&p[..n]).is_err(), "prefix {n}");
    }
    for bad in [
        &b"."[..],
        b"a.",
        b"(a.",
        b"K\x01(\x86.",
        b"u.",
        b"h\x05.",
        b"Q.",
        b"R.",
        b"\xff.",
    ] {
        assert!(read(bad).is_err(), "{bad:?}");
    }
}
