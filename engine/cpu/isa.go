package cpu

// #include <oneapi/dnnl/dnnl.h>
import "C"

// ISA names the instruction set the device's kernels run on: oneDNN's
// choice for matrix products (amx, avx512_bf16, avx512, avx2, ...) and
// whether the AVX-512 C kernels are in use for the rest, and which bf16
// attention runs (attention_flash.go).
func (d *Device) ISA() string {
	mm := "generic"
	switch isa := C.dnnl_get_effective_cpu_isa(); {
	case isa&C.dnnl_cpu_isa_avx512_core_amx == C.dnnl_cpu_isa_avx512_core_amx:
		mm = "amx_bf16"
	case isa&C.dnnl_cpu_isa_avx512_core_bf16 == C.dnnl_cpu_isa_avx512_core_bf16:
		mm = "avx512_bf16"
	case isa&C.dnnl_cpu_isa_avx512_core == C.dnnl_cpu_isa_avx512_core:
		mm = "avx512"
	case isa&C.dnnl_cpu_isa_avx2 == C.dnnl_cpu_isa_avx2:
		mm = "avx2"
	}
	k := "go"
	if simd {
		k = "avx512"
	}
	a := "onednn"
	switch d.flash {
	case 1:
		a = "flash avx512_bf16"
	case 2:
		a = "flash amx_bf16"
	}
	return "matmul " + mm + ", kernels " + k + ", bf16 attention " + a
}
