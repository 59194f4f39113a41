// Package tuningbench compares the operator's tuner (controllers/tuning)
// with classical online optimisers on families of analytic loss scenarios
// (make bench-tuning). It holds only tests and benchmarks; this file gives
// the package its documentation.
package tuningbench
