/* One-off measurement behind issue 12's choice (docs/benchmarks.md, "The cnn
 * preset"): oneDNN 2.6 convolution and pooling primitives on the cnn
 * preset's shapes, forward, backward-data and backward-weights, for one
 * trainer shard (N images, T OpenMP threads). Not part of the build:
 *
 *   cc -O2 bench/onednn_conv.c -o /tmp/onednn_conv -ldnnl -fopenmp
 *   /tmp/onednn_conv 64 1          # blocked layouts (format "any")
 *   NHWC=1 /tmp/onednn_conv 64 1   # activations forced to NHWC
 *   /tmp/onednn_conv 128 2         # the whole batch on an OpenMP team of 2
 *   /tmp/onednn_conv 64 1 wino     # Winograd for the second convolution
 *
 * Prints the best of 7 runs of each primitive in ms and the sum per step. */
#include <dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define CK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("fail %s line %d: %d\n", #x, __LINE__, s_); exit(1);} } while (0)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static dnnl_engine_t eng; static dnnl_stream_t st;
static dnnl_memory_t mk(const dnnl_memory_desc_t *md){dnnl_memory_t m; CK(dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE)); void*p; dnnl_memory_get_data_handle(m,&p); memset(p,0,dnnl_memory_desc_get_size(md)); float*f=p; for(size_t i=0;i<dnnl_memory_desc_get_size(md)/4;i++) f[i]=(float)((i*7919)%13)/13.f-0.3f; return m;}
static const char *impl(dnnl_primitive_desc_t pd){const char*s; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str,0,&s); return s;}
static double timeit(dnnl_primitive_t p, int n, dnnl_exec_arg_t *a, int reps){
  for(int i=0;i<2;i++) CK(dnnl_primitive_execute(p,st,n,a));
  double best=1e9; for(int r=0;r<reps;r++){double t=now(); CK(dnnl_primitive_execute(p,st,n,a)); dnnl_stream_wait(st); t=now()-t; if(t<best)best=t;} return best;}
/* conv layer: N, IC, IH, OC, K; returns time fwd, bwd_d, bwd_w */
static int NHWC;
static void conv(int N,int IC,int IH,int OC,int K,int relu,int need_bd, dnnl_alg_kind_t alg, double *tot){
  int OH=IH-K+1;
  dnnl_dims_t sd={N,IC,IH,IH}, wd={OC,IC,K,K}, bd={OC}, dd={N,OC,OH,OH}, str={1,1}, pad={0,0};
  dnnl_memory_desc_t src,w,b,dst;
  CK(dnnl_memory_desc_init_by_tag(&src,4,sd,dnnl_f32,NHWC?dnnl_nhwc:IC==1?dnnl_nchw:dnnl_format_tag_any));
  CK(dnnl_memory_desc_init_by_tag(&w,4,wd,dnnl_f32,dnnl_format_tag_any));
  CK(dnnl_memory_desc_init_by_tag(&b,1,bd,dnnl_f32,dnnl_x));
  CK(dnnl_memory_desc_init_by_tag(&dst,4,dd,dnnl_f32,NHWC?dnnl_nhwc:dnnl_format_tag_any));
  dnnl_memory_desc_t wany=w;
  dnnl_convolution_desc_t cd; CK(dnnl_convolution_forward_desc_init(&cd,dnnl_forward_training,alg,&src,&w,&b,&dst,str,pad,pad));
  dnnl_primitive_attr_t at; dnnl_primitive_attr_create(&at);
  if(relu){dnnl_post_ops_t po; dnnl_post_ops_create(&po); dnnl_post_ops_append_eltwise(po,1.f,dnnl_eltwise_relu,0,0); dnnl_primitive_attr_set_post_ops(at,po);}
  dnnl_primitive_desc_t fpd; CK(dnnl_primitive_desc_create(&fpd,&cd,at,eng,NULL));
  const dnnl_memory_desc_t *S=dnnl_primitive_desc_query_md(fpd,dnnl_query_src_md,0),*W=dnnl_primitive_desc_query_md(fpd,dnnl_query_weights_md,0),*D=dnnl_primitive_desc_query_md(fpd,dnnl_query_dst_md,0);
  dnnl_memory_t ms=mk(S),mw=mk(W),mb=mk(&b),md=mk(D),mdd=mk(D),mds=mk(S),mdw=mk(W),mdb=mk(&b);
  dnnl_primitive_t fp; CK(dnnl_primitive_create(&fp,fpd));
  dnnl_exec_arg_t fa[]={{DNNL_ARG_SRC,ms},{DNNL_ARG_WEIGHTS,mw},{DNNL_ARG_BIAS,mb},{DNNL_ARG_DST,md}};
  double tf=timeit(fp,4,fa,7);
  /* bwd weights */
  dnnl_convolution_desc_t bwd; CK(dnnl_convolution_backward_weights_desc_init(&bwd,alg,S,&wany,&b,D,str,pad,pad));
  dnnl_primitive_desc_t wpd; CK(dnnl_primitive_desc_create(&wpd,&bwd,NULL,eng,fpd));
  const dnnl_memory_desc_t *WDD=dnnl_primitive_desc_query_md(wpd,dnnl_query_diff_dst_md,0),*WS=dnnl_primitive_desc_query_md(wpd,dnnl_query_src_md,0),*WW=dnnl_primitive_desc_query_md(wpd,dnnl_query_diff_weights_md,0);
  int same = dnnl_memory_desc_equal(WDD,D)&&dnnl_memory_desc_equal(WS,S)&&dnnl_memory_desc_equal(WW,W);
  dnnl_memory_t mdd2=mk(WDD), ms2=mk(WS), mdw2=mk(WW);
  dnnl_primitive_t wp; CK(dnnl_primitive_create(&wp,wpd));
  dnnl_exec_arg_t wa[]={{DNNL_ARG_SRC,ms2},{DNNL_ARG_DIFF_DST,mdd2},{DNNL_ARG_DIFF_WEIGHTS,mdw2},{DNNL_ARG_DIFF_BIAS,mdb}};
  double tw=timeit(wp,4,wa,7), tb=0;
  const char *bi="-";
  if(need_bd){
    dnnl_convolution_desc_t bdd; CK(dnnl_convolution_backward_data_desc_init(&bdd,alg,S,&wany,D,str,pad,pad));
    dnnl_primitive_desc_t bpd; CK(dnnl_primitive_desc_create(&bpd,&bdd,NULL,eng,fpd));
    dnnl_primitive_t bp; CK(dnnl_primitive_create(&bp,bpd));
    dnnl_exec_arg_t ba[]={{DNNL_ARG_DIFF_DST,mdd},{DNNL_ARG_WEIGHTS,mk(dnnl_primitive_desc_query_md(bpd,dnnl_query_weights_md,0))},{DNNL_ARG_DIFF_SRC,mds}};
    tb=timeit(bp,3,ba,7); bi=impl(bpd);
  }
  (void)mdw;
  printf("conv N%d %d->%d %dx%d: fwd %.3f ms [%s] bwd_w %.3f ms [%s]%s bwd_d %.3f ms [%s]\n",N,IC,OC,IH,IH,tf*1e3,impl(fpd),tw*1e3,impl(wpd),same?"":"(fmt differs)",tb*1e3,bi);
  *tot += tf+tw+tb;
}
static void pool(int N,int C,int IH,double*tot){
  int OH=IH/2; dnnl_dims_t sd={N,C,IH,IH},dd={N,C,OH,OH},k={2,2},s={2,2},p={0,0};
  dnnl_memory_desc_t src,dst; CK(dnnl_memory_desc_init_by_tag(&src,4,sd,dnnl_f32,dnnl_nChw16c)); CK(dnnl_memory_desc_init_by_tag(&dst,4,dd,dnnl_f32,dnnl_format_tag_any));
  dnnl_pooling_desc_t pd; CK(dnnl_pooling_forward_desc_init(&pd,dnnl_forward_training,dnnl_pooling_max,&src,&dst,s,k,p,p));
  dnnl_primitive_desc_t fpd; CK(dnnl_primitive_desc_create(&fpd,&pd,NULL,eng,NULL));
  const dnnl_memory_desc_t *D=dnnl_primitive_desc_query_md(fpd,dnnl_query_dst_md,0),*WS=dnnl_primitive_desc_query_md(fpd,dnnl_query_workspace_md,0);
  dnnl_memory_t ms=mk(&src),md=mk(D),mw=mk(WS),mds=mk(&src),mdd=mk(D);
  dnnl_primitive_t fp; CK(dnnl_primitive_create(&fp,fpd));
  dnnl_exec_arg_t fa[]={{DNNL_ARG_SRC,ms},{DNNL_ARG_DST,md},{DNNL_ARG_WORKSPACE,mw}};
  double tf=timeit(fp,3,fa,7);
  dnnl_pooling_desc_t bd; CK(dnnl_pooling_backward_desc_init(&bd,dnnl_pooling_max,&src,D,s,k,p,p));
  dnnl_primitive_desc_t bpd; CK(dnnl_primitive_desc_create(&bpd,&bd,NULL,eng,fpd));
  dnnl_primitive_t bp; CK(dnnl_primitive_create(&bp,bpd));
  dnnl_exec_arg_t ba[]={{DNNL_ARG_DIFF_DST,mdd},{DNNL_ARG_DIFF_SRC,mds},{DNNL_ARG_WORKSPACE,mw}};
  double tb=timeit(bp,3,ba,7);
  printf("pool N%d C%d %d: fwd %.3f ms [%s] bwd %.3f ms [%s]\n",N,C,IH,tf*1e3,impl(fpd),tb*1e3,impl(bpd));
  *tot+=tf+tb;
}
int main(int argc,char**argv){
  int N=atoi(argv[1]), T=atoi(argv[2]); dnnl_alg_kind_t alg = argc>3 && !strcmp(argv[3],"wino")? dnnl_convolution_winograd: argc>3 && !strcmp(argv[3],"auto") ? dnnl_convolution_auto : dnnl_convolution_direct;
  omp_set_num_threads(T); NHWC=getenv("NHWC")!=NULL;
  CK(dnnl_engine_create(&eng,dnnl_cpu,0)); CK(dnnl_stream_create(&st,eng,dnnl_stream_default_flags));
  double tot=0;
  conv(N,1,28,32,3,1,0,dnnl_convolution_direct,&tot);
  pool(N,32,26,&tot);
  conv(N,32,13,64,3,1,1,alg,&tot);
  pool(N,64,11,&tot);
  printf("total per step %.3f ms -> epoch %.2f s (x %d steps)\n", tot*1e3, tot*60000.0/N, 60000/N);
}
