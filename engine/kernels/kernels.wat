;; fleet's WebAssembly SIMD kernels, for element loops that JavaScript runs slowly: the Adam update and
;; dropout masks. Built into kernels.wasm by `npm run build:wasm` (engine/kernels/build-kernels.ts); a test
;; checks that the committed .wasm is what this source compiles to. engine/kernels/kernels.ts loads it.
;;
;; ---- adam
;; The Adam / AdamW update of torch.optim (single-tensor path) over float32 arrays, computed in float64 per
;; element: four elements per iteration as two f64x2 halves, then the n % 4 left one at a time. Every value is
;; computed with the same operations in the same order as the plain JavaScript loop (test/optim.test.ts keeps
;; it as the reference), and WebAssembly float arithmetic is IEEE round-to-nearest without fused multiply-add,
;; so the results are bit-identical to it.
;;
;; adam(p, g, m, v, n, coupled, decay, beta1, beta2, 1-beta1, 1-beta2, stepSize, sqrt(bias correction 2), eps)
;;   p, g, m, v: byte offsets of float32 arrays of n elements (parameter, gradient, first and second moments)
;;   coupled = 1: Adam's L2 penalty, g += decay * p; coupled = 0: AdamW's decoupled decay, p *= decay
;;   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;  p -= stepSize*m / (sqrt(v)/bc2 + eps)
(module
  (memory (export "memory") 1)
  (func (export "adam")
    (param $p i32) (param $g i32) (param $m i32) (param $v i32) (param $n i32) (param $coupled i32)
    (param $decay f64) (param $beta1 f64) (param $beta2 f64) (param $omb1 f64) (param $omb2 f64)
    (param $stepSize f64) (param $bc2 f64) (param $eps f64)
    (local $i i32) (local $end i32) (local $off i32)
    (local $vdecay v128) (local $vb1 v128) (local $vb2 v128) (local $vo1 v128) (local $vo2 v128)
    (local $vss v128) (local $vbc v128) (local $veps v128)
    (local $P v128) (local $G v128) (local $M v128) (local $V v128)
    (local $p0 v128) (local $p1 v128) (local $g0 v128) (local $g1 v128) (local $m0 v128) (local $m1 v128) (local $v0 v128) (local $v1 v128)
    (local $sp f64) (local $sg f64) (local $sm f64) (local $sv f64)
    (local.set $vdecay (f64x2.splat (local.get $decay)))
    (local.set $vb1 (f64x2.splat (local.get $beta1)))
    (local.set $vb2 (f64x2.splat (local.get $beta2)))
    (local.set $vo1 (f64x2.splat (local.get $omb1)))
    (local.set $vo2 (f64x2.splat (local.get $omb2)))
    (local.set $vss (f64x2.splat (local.get $stepSize)))
    (local.set $vbc (f64x2.splat (local.get $bc2)))
    (local.set $veps (f64x2.splat (local.get $eps)))
    (local.set $end (i32.and (local.get $n) (i32.const -4)))
    (block $done
      (loop $vec
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $off (i32.shl (local.get $i) (i32.const 2)))
        (local.set $P (v128.load (i32.add (local.get $p) (local.get $off))))
        (local.set $G (v128.load (i32.add (local.get $g) (local.get $off))))
        (local.set $M (v128.load (i32.add (local.get $m) (local.get $off))))
        (local.set $V (v128.load (i32.add (local.get $v) (local.get $off))))
        (local.set $p0 (f64x2.promote_low_f32x4 (local.get $P)))
        (local.set $p1 (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $P) (local.get $P))))
        (local.set $g0 (f64x2.promote_low_f32x4 (local.get $G)))
        (local.set $g1 (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $G) (local.get $G))))
        (local.set $m0 (f64x2.promote_low_f32x4 (local.get $M)))
        (local.set $m1 (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $M) (local.get $M))))
        (local.set $v0 (f64x2.promote_low_f32x4 (local.get $V)))
        (local.set $v1 (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $V) (local.get $V))))
        (if (local.get $coupled)
          (then
            (local.set $g0 (f64x2.add (local.get $g0) (f64x2.mul (local.get $vdecay) (local.get $p0))))
            (local.set $g1 (f64x2.add (local.get $g1) (f64x2.mul (local.get $vdecay) (local.get $p1)))))
          (else
            (local.set $p0 (f64x2.mul (local.get $p0) (local.get $vdecay)))
            (local.set $p1 (f64x2.mul (local.get $p1) (local.get $vdecay)))))
        (local.set $m0 (f64x2.add (f64x2.mul (local.get $vb1) (local.get $m0)) (f64x2.mul (local.get $vo1) (local.get $g0))))
        (local.set $m1 (f64x2.add (f64x2.mul (local.get $vb1) (local.get $m1)) (f64x2.mul (local.get $vo1) (local.get $g1))))
        (local.set $v0 (f64x2.add (f64x2.mul (local.get $vb2) (local.get $v0)) (f64x2.mul (f64x2.mul (local.get $vo2) (local.get $g0)) (local.get $g0))))
        (local.set $v1 (f64x2.add (f64x2.mul (local.get $vb2) (local.get $v1)) (f64x2.mul (f64x2.mul (local.get $vo2) (local.get $g1)) (local.get $g1))))
        (local.set $p0 (f64x2.sub (local.get $p0) (f64x2.div (f64x2.mul (local.get $vss) (local.get $m0))
          (f64x2.add (f64x2.div (f64x2.sqrt (local.get $v0)) (local.get $vbc)) (local.get $veps)))))
        (local.set $p1 (f64x2.sub (local.get $p1) (f64x2.div (f64x2.mul (local.get $vss) (local.get $m1))
          (f64x2.add (f64x2.div (f64x2.sqrt (local.get $v1)) (local.get $vbc)) (local.get $veps)))))
        (v128.store (i32.add (local.get $p) (local.get $off))
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero (local.get $p0)) (f32x4.demote_f64x2_zero (local.get $p1))))
        (v128.store (i32.add (local.get $m) (local.get $off))
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero (local.get $m0)) (f32x4.demote_f64x2_zero (local.get $m1))))
        (v128.store (i32.add (local.get $v) (local.get $off))
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero (local.get $v0)) (f32x4.demote_f64x2_zero (local.get $v1))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $vec)))
    ;; the last n % 4 elements, one at a time
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $off (i32.shl (local.get $i) (i32.const 2)))
        (local.set $sp (f64.promote_f32 (f32.load (i32.add (local.get $p) (local.get $off)))))
        (local.set $sg (f64.promote_f32 (f32.load (i32.add (local.get $g) (local.get $off)))))
        (local.set $sm (f64.promote_f32 (f32.load (i32.add (local.get $m) (local.get $off)))))
        (local.set $sv (f64.promote_f32 (f32.load (i32.add (local.get $v) (local.get $off)))))
        (if (local.get $coupled)
          (then (local.set $sg (f64.add (local.get $sg) (f64.mul (local.get $decay) (local.get $sp)))))
          (else (local.set $sp (f64.mul (local.get $sp) (local.get $decay)))))
        (local.set $sm (f64.add (f64.mul (local.get $beta1) (local.get $sm)) (f64.mul (local.get $omb1) (local.get $sg))))
        (local.set $sv (f64.add (f64.mul (local.get $beta2) (local.get $sv)) (f64.mul (f64.mul (local.get $omb2) (local.get $sg)) (local.get $sg))))
        (local.set $sp (f64.sub (local.get $sp) (f64.div (f64.mul (local.get $stepSize) (local.get $sm))
          (f64.add (f64.div (f64.sqrt (local.get $sv)) (local.get $bc2)) (local.get $eps)))))
        (f32.store (i32.add (local.get $p) (local.get $off)) (f32.demote_f64 (local.get $sp)))
        (f32.store (i32.add (local.get $m) (local.get $off)) (f32.demote_f64 (local.get $sm)))
        (f32.store (i32.add (local.get $v) (local.get $off)) (f32.demote_f64 (local.get $sv)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail)))
  )
;; ---- dropout_mask
;; Fills n4 groups of 4 float32 at byte offset out with inverted-dropout mask values: keep (1 / (1 - p)) where
;; a 32-bit draw is >= threshold (round(p * 2^32)), else 0. The draws come from xoshiro128++ (Blackman and
;; Vigna), one generator per lane, whose 4 x 4 state words are at byte offset state (lane-interleaved: word j
;; of lane l at state + 16*j + 4*l) and are written back, so a second call continues the stream.
  (func (export "dropout_mask") (param $out i32) (param $n4 i32) (param $state i32) (param $threshold i32) (param $keep f32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $r v128) (local $t v128)
    (local $vth v128) (local $vkeep v128) (local $end i32)
    (local.set $s0 (v128.load (local.get $state)))
    (local.set $s1 (v128.load offset=16 (local.get $state)))
    (local.set $s2 (v128.load offset=32 (local.get $state)))
    (local.set $s3 (v128.load offset=48 (local.get $state)))
    (local.set $vth (i32x4.splat (local.get $threshold)))
    (local.set $vkeep (f32x4.splat (local.get $keep)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n4) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        ;; result = rotl(s0 + s3, 7) + s0
        (local.set $r (i32x4.add (local.get $s0) (local.get $s3)))
        (local.set $r (i32x4.add (v128.or (i32x4.shl (local.get $r) (i32.const 7)) (i32x4.shr_u (local.get $r) (i32.const 25))) (local.get $s0)))
        ;; t = s1 << 9; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11)
        (local.set $t (i32x4.shl (local.get $s1) (i32.const 9)))
        (local.set $s2 (v128.xor (local.get $s2) (local.get $s0)))
        (local.set $s3 (v128.xor (local.get $s3) (local.get $s1)))
        (local.set $s1 (v128.xor (local.get $s1) (local.get $s2)))
        (local.set $s0 (v128.xor (local.get $s0) (local.get $s3)))
        (local.set $s2 (v128.xor (local.get $s2) (local.get $t)))
        (local.set $s3 (v128.or (i32x4.shl (local.get $s3) (i32.const 11)) (i32x4.shr_u (local.get $s3) (i32.const 21))))
        (v128.store (local.get $out) (v128.and (local.get $vkeep) (i32x4.ge_u (local.get $r) (local.get $vth))))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next)))
    (v128.store (local.get $state) (local.get $s0))
    (v128.store offset=16 (local.get $state) (local.get $s1))
    (v128.store offset=32 (local.get $state) (local.get $s2))
    (v128.store offset=48 (local.get $state) (local.get $s3))
  )
)
