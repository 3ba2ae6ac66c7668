// expect: not a tensor element type
#include <moe/moe.hpp>
int main() { return int(moe::dtype_of_v<char>); }
