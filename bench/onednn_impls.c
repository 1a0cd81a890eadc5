/* One-off measurement (docs/benchmarks.md, "The cnn preset"): every f32
 * implementation oneDNN 2.6 offers for the cnn preset's second convolution
 * (32->64, 3x3, 13x13), forward, backward-weights and backward-data, N
 * images on one thread; reference kernels skipped. Not part of the build:
 *
 *   cc -O2 bench/onednn_impls.c -o /tmp/onednn_impls -ldnnl
 *   OMP_NUM_THREADS=1 /tmp/onednn_impls 64 [any|blk|nhwc]
 *
 * Prints the best of 15 runs of each implementation in ms. */
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define CK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("fail %s line %d: %d\n", #x, __LINE__, s_); exit(1);} } while (0)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static dnnl_engine_t eng; static dnnl_stream_t st;
static dnnl_memory_t mk(const dnnl_memory_desc_t *md){dnnl_memory_t m; CK(dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE)); void*p; dnnl_memory_get_data_handle(m,&p); float*f=p; for(size_t i=0;i<dnnl_memory_desc_get_size(md)/4;i++) f[i]=(float)((i*7919)%13)/13.f-0.3f; return m;}
static const char *impl(const_dnnl_primitive_desc_t pd){const char*s; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str,0,&s); return s;}
static double timeit(dnnl_primitive_t p, int n, dnnl_exec_arg_t *a){
  for(int i=0;i<3;i++) CK(dnnl_primitive_execute(p,st,n,a));
  double best=1e9; for(int r=0;r<15;r++){double t=now(); CK(dnnl_primitive_execute(p,st,n,a)); dnnl_stream_wait(st); t=now()-t; if(t<best)best=t;} return best*1e3;}
int main(int argc,char**argv){
  int N=atoi(argv[1]); const char *tag=argc>2?argv[2]:"any";
  dnnl_format_tag_t at = !strcmp(tag,"nhwc")?dnnl_nhwc: !strcmp(tag,"blk")?dnnl_nChw16c: dnnl_format_tag_any;
  CK(dnnl_engine_create(&eng,dnnl_cpu,0)); CK(dnnl_stream_create(&st,eng,dnnl_stream_default_flags));
  int IC=32,IH=13,OC=64,K=3,OH=11;
  dnnl_dims_t sd={N,IC,IH,IH}, wd={OC,IC,K,K}, bd={OC}, dd={N,OC,OH,OH}, str={1,1}, pad={0,0};
  dnnl_memory_desc_t src,w,b,dst;
  CK(dnnl_memory_desc_init_by_tag(&src,4,sd,dnnl_f32,at));
  CK(dnnl_memory_desc_init_by_tag(&w,4,wd,dnnl_f32,dnnl_format_tag_any));
  CK(dnnl_memory_desc_init_by_tag(&b,1,bd,dnnl_f32,dnnl_x));
  CK(dnnl_memory_desc_init_by_tag(&dst,4,dd,dnnl_f32,at));
  dnnl_convolution_desc_t cd; CK(dnnl_convolution_forward_desc_init(&cd,dnnl_forward_training,dnnl_convolution_direct,&src,&w,&b,&dst,str,pad,pad));
  dnnl_convolution_desc_t bwd; CK(dnnl_convolution_backward_weights_desc_init(&bwd,dnnl_convolution_direct,&src,&w,&b,&dst,str,pad,pad));
  dnnl_convolution_desc_t bdd; CK(dnnl_convolution_backward_data_desc_init(&bdd,dnnl_convolution_direct,&src,&w,&dst,str,pad,pad));
  dnnl_primitive_desc_iterator_t it; CK(dnnl_primitive_desc_iterator_create(&it,&cd,NULL,eng,NULL));
  dnnl_primitive_desc_t fpd0 = NULL;
  do {
    dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
    if (!fpd0) dnnl_primitive_desc_clone(&fpd0, pd);
    const char *nm = impl(pd);
    if (strstr(nm,"ref")) { dnnl_primitive_desc_destroy(pd); continue; }
    const dnnl_memory_desc_t *S=dnnl_primitive_desc_query_md(pd,dnnl_query_src_md,0),*W=dnnl_primitive_desc_query_md(pd,dnnl_query_weights_md,0),*D=dnnl_primitive_desc_query_md(pd,dnnl_query_dst_md,0);
    dnnl_memory_t ms=mk(S),mw=mk(W),mb=mk(&b),md=mk(D);
    dnnl_primitive_t p; CK(dnnl_primitive_create(&p,pd));
    const dnnl_memory_desc_t *SP=dnnl_primitive_desc_query_md(pd,dnnl_query_scratchpad_md,0);
    dnnl_memory_t msp = SP && dnnl_memory_desc_get_size(SP) ? mk(SP) : NULL;
    dnnl_exec_arg_t a[]={{DNNL_ARG_SRC,ms},{DNNL_ARG_WEIGHTS,mw},{DNNL_ARG_BIAS,mb},{DNNL_ARG_DST,md},{DNNL_ARG_SCRATCHPAD,msp}};
    printf("fwd   %-28s %.3f ms\n", nm, timeit(p, msp?5:4, a));
    dnnl_primitive_destroy(p); dnnl_primitive_desc_destroy(pd);
  } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
  for (int op=0; op<2; op++){
    dnnl_primitive_desc_iterator_t it2; CK(dnnl_primitive_desc_iterator_create(&it2,op?(void*)&bdd:(void*)&bwd,NULL,eng,fpd0));
    do {
      dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it2);
      const char *nm = impl(pd);
      if (strstr(nm,"ref")) { dnnl_primitive_desc_destroy(pd); continue; }
      const dnnl_memory_desc_t *S=dnnl_primitive_desc_query_md(pd,op?dnnl_query_diff_src_md:dnnl_query_src_md,0),*W=dnnl_primitive_desc_query_md(pd,op?dnnl_query_weights_md:dnnl_query_diff_weights_md,0),*D=dnnl_primitive_desc_query_md(pd,dnnl_query_diff_dst_md,0);
      dnnl_memory_t ms=mk(S),mw=mk(W),mb=mk(&b),md=mk(D);
      const dnnl_memory_desc_t *SP=dnnl_primitive_desc_query_md(pd,dnnl_query_scratchpad_md,0);
      dnnl_memory_t msp = SP && dnnl_memory_desc_get_size(SP) ? mk(SP) : NULL;
      dnnl_primitive_t p; CK(dnnl_primitive_create(&p,pd));
      double t;
      if (op) { dnnl_exec_arg_t a[]={{DNNL_ARG_DIFF_SRC,ms},{DNNL_ARG_WEIGHTS,mw},{DNNL_ARG_DIFF_DST,md},{DNNL_ARG_SCRATCHPAD,msp}}; t=timeit(p,msp?4:3,a);} 
      else { dnnl_exec_arg_t a[]={{DNNL_ARG_SRC,ms},{DNNL_ARG_DIFF_WEIGHTS,mw},{DNNL_ARG_DIFF_BIAS,mb},{DNNL_ARG_DIFF_DST,md},{DNNL_ARG_SCRATCHPAD,msp}}; t=timeit(p,msp?5:4,a);} 
      printf("%s %-28s %.3f ms\n", op?"bwd_d":"bwd_w", nm, t);
      dnnl_primitive_destroy(p); dnnl_primitive_desc_destroy(pd);
    } while (dnnl_primitive_desc_iterator_next(it2) == dnnl_success);
  }
  return 0;
}
